"""Cost of the blank-plateau check's validation pass (speechkd/training/plateau.py) on a trained transducer.

At every validation after the transducer has joined the training, the ASR task runs a greedy transducer search
over the validation batches. This prints, measured in one run on one part, the seconds of that search against
the seconds of the encoder forward that validation runs anyway, and their ratio::

    python bench/bench_valid_plateau.py --exp-dir egs/minilibri/exp_wf/asr_whisper_init_seed0 --part dev
"""

from __future__ import annotations

import argparse
import time

import torch

from speechkd.data.datamodule import AsrDataModule
from speechkd.decoding.asr_decode import load_model_for_decoding
from speechkd.decoding.transducer import greedy_search
from speechkd.training.asr_experiment import load_cuts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exp-dir", required=True, help="a trained transducer experiment (averaged.pt or epoch-N.pt)")
    ap.add_argument("--part", default="dev", help="cuts part of the experiment's cuts_dir")
    ap.add_argument("--max-duration", type=float, default=40.0, help="seconds of audio per batch")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, paths = load_model_for_decoding(args.exp_dir, None)
    cfg.data.max_duration = args.max_duration
    loader = AsrDataModule(cfg.data, tokenizer=None).eval_dataloader(load_cuts(paths["cuts_dir"], [args.part]))
    enc_s = greedy_s = 0.0
    with torch.no_grad():
        for batch in loader:
            t0 = time.perf_counter()
            enc = model.encode(batch["inputs"], batch["input_lens"])
            t1 = time.perf_counter()
            greedy_search(model, enc.out, enc.out_lens)
            greedy_s += time.perf_counter() - t1
            enc_s += t1 - t0
    print(f"{args.exp_dir} {args.part}: encoder {enc_s:.2f} s, transducer greedy {greedy_s:.2f} s, "
          f"ratio {greedy_s / enc_s:.2f} ({args.threads} thread(s))")


if __name__ == "__main__":
    main()

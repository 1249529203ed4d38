"""Greedy-CTC decoding speed of an LM-KD student (attention decoders in training) vs a no-KD CTC model,
measured in one run.

Both models are built from the same preset (default: mini, as conf/asr_ctc.yaml and conf/lm2ctc.yaml); the
LM-KD one gets attention decoders on layers 6 and 9, then goes through the decoding path
(``decoding_config`` + ``decoding_state``: the decoders are dropped, as ``asr decode`` does). The same
random fbank batches are decoded by both, interleaved over ``--repeats`` rounds after a warm-up round.

    .venv/bin/python bench/bench_lm2ctc_rtf.py --threads 1 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from speechkd.decoding.ctc import ctc_greedy_search
from speechkd.models.asr import AsrModel, decoding_config, decoding_state, load_preset

FRAMES_PER_SECOND = 100  # fbank frame rate


def build(preset: str, vocab: int, decoder_layers: list[int], lm_vocab: int) -> tuple[AsrModel, int]:
    """(decoding model, parameters of the training model)."""
    cfg = load_preset(preset, ["use_transducer=false", f"vocab_size={vocab}"])
    cfg.encoder.global_cmvn = False
    if decoder_layers:
        cfg.attention_decoders.layers, cfg.attention_decoders.vocab_size = decoder_layers, lm_vocab
    torch.manual_seed(0)
    trained = AsrModel(cfg)
    model = AsrModel(decoding_config(cfg))
    model.load_state_dict(decoding_state(trained.state_dict()))
    return model.eval(), trained.num_params()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mini")
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("--lm-vocab", type=int, default=1000)
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 9])
    ap.add_argument("--utts", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each utterance")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    systems = {"no-KD CTC": build(args.preset, args.vocab, [], args.lm_vocab),
               "LM-KD CTC": build(args.preset, args.vocab, args.layers, args.lm_vocab)}
    g = torch.Generator().manual_seed(1)
    t = int(args.seconds * FRAMES_PER_SECOND)
    batches = [torch.randn(args.batch, t, 80, generator=g) for _ in range(args.utts // args.batch)]
    audio = len(batches) * args.batch * args.seconds
    times: dict[str, list[float]] = {k: [] for k in systems}
    with torch.inference_mode():
        for r in range(args.repeats + 1):
            for name, (model, _) in systems.items():
                t0 = time.perf_counter()
                for x in batches:
                    lens = torch.full((x.size(0),), x.size(1))
                    enc = model.encode(x, lens)
                    ctc_greedy_search(model.ctc_log_probs(enc.out), enc.out_lens, model.blank_id)
                if r:
                    times[name].append(time.perf_counter() - t0)
    print(f"preset {args.preset}, {args.utts} x {args.seconds:g} s, batch {args.batch}, {args.threads} thread(s), "
          f"{args.repeats} rounds (interleaved) after a warm-up")
    print(f"{'system':<10} {'train params':>12} {'decode params':>13} {'median s':>9} {'min s':>7} {'max s':>7} {'RTF':>7}")
    for name, (model, train_params) in systems.items():
        ts = times[name]
        med = statistics.median(ts)
        print(f"{name:<10} {train_params:>12} {model.num_params():>13} {med:>9.3f} {min(ts):>7.3f} {max(ts):>7.3f} "
              f"{med / audio:>7.4f}")


if __name__ == "__main__":
    main()

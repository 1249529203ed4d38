#!/usr/bin/env python3
"""Do LM-to-CTC's attention decoders read the audio, or predict the transcript from its own history?

Loads an LM-KD training checkpoint (its decoders are in ``epoch-N.pt``; ``averaged.pt`` drops them) and scores
each decoder on soft-labelled cuts (teacher forcing, as in training) twice: with the encoder layer of the
utterance itself, and with the encoder layer of *another* utterance of the batch (the batch rolled by one, with
its lengths). Prints per decoder the CE per LM token and top-1 accuracy under both, and the CE gap. A decoder
that leans on its causal self-attention over the reference history (an LM of its own) loses little when the
audio is swapped; then its gradient tells the encoder little, which is what LM-KD needs it to do.

    cd egs/minilibri
    ../../.venv/bin/python ../../bench/lm2ctc_decoder_reliance.py --exp-dir exp/lm2ctc_minilm/kd_seed0 \\
        --cuts exp/lm2ctc_minilm/soft_labels/librispeech_cuts_dev.jsonl.gz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechkd.data.datamodule import AsrDataModule  # noqa: E402
from speechkd.losses.layerwise import valid_frame_mask  # noqa: E402
from speechkd.losses.lm_kd import token_ce  # noqa: E402
from speechkd.models.asr import AsrModel  # noqa: E402
from speechkd.targets.lm_soft_labels import FIELD_TOKENS  # noqa: E402
from speechkd.tasks.lm_kd import TARGET_FIELDS  # noqa: E402
from speechkd.training.asr_experiment import read_experiment  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True, help="an LM-KD training dir (asr train with loss.lm_kd)")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the last epoch-N.pt of --exp-dir")
    p.add_argument("--cuts", type=Path, required=True, help="soft-labelled cuts (lm2ctc soft-labels output)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def last_epoch(exp_dir: Path) -> Path:
    epochs = sorted(exp_dir.glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    if not epochs:
        sys.exit(f"{exp_dir}: no epoch-N.pt (the decoders are only in training checkpoints)")
    return epochs[-1]


@torch.no_grad()
def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from lhotse import CutSet

    cfg, _paths = read_experiment(args.exp_dir)
    ckpt = args.checkpoint or last_epoch(args.exp_dir)
    model = AsrModel(cfg.model)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["model"])
    model.eval()
    if model.attention_decoders is None:
        sys.exit(f"{ckpt}: the model has no attention decoders")
    dm = AsrDataModule(cfg.data, tokenizer=None, target_fields=list(TARGET_FIELDS))
    loader = dm.eval_dataloader(CutSet.from_file(args.cuts))
    sums = {(layer, cond): [0.0, 0, 0] for layer in model.attention_decoders for cond in ("own", "other")}
    for batch in loader:
        if len(batch["cut_ids"]) < 2:
            continue  # nothing to swap with
        enc = model.encode(batch["inputs"], batch["input_lens"])
        tg = batch["targets"]
        lens = tg[FIELD_TOKENS + "_lens"]
        keep = (lens > 0) & (lens <= next(iter(model.attention_decoders.values())).max_tokens)
        idx = keep.nonzero(as_tuple=True)[0]
        if len(idx) < 2:
            continue
        lens = lens[idx]
        tokens = tg[FIELD_TOKENS][idx, : int(lens.max())]
        for layer, dec in model.attention_decoders.items():
            memory, mem_lens = enc.layer_outputs[int(layer) - 1][idx], enc.out_lens[idx]
            for cond, shift in (("own", 0), ("other", 1)):
                logits = dec(memory.roll(shift, 0), mem_lens.roll(shift, 0), tokens, lens)  # (N', U, V)
                correct = ((logits.argmax(-1) == tokens) & valid_frame_mask(lens, tokens.size(1))).sum()
                s = sums[(layer, cond)]
                s[0] += float(token_ce(logits, tokens, lens))
                s[1] += int(correct)
                s[2] += int(lens.sum())
    print(f"# {ckpt} on {args.cuts}: teacher-forced decoders, own audio vs another utterance's audio")
    print("layer  tokens  CE/token own  CE/token other  gap   top-1 own  top-1 other")
    for layer in model.attention_decoders:
        own, other = sums[(layer, "own")], sums[(layer, "other")]
        ce_own, ce_other = own[0] / own[2], other[0] / other[2]
        print(f"{layer:>5}  {own[2]:6d}  {ce_own:12.3f}  {ce_other:14.3f}  {ce_other - ce_own:5.3f}  "
              f"{100 * own[1] / own[2]:8.1f} %  {100 * other[1] / other[2]:9.1f} %")


if __name__ == "__main__":
    main()

"""Can the encoder memorise a few utterances? A CTC overfit check for the blank plateau.

Trains a fresh CTC model of a preset on the first ``--num-utts`` training cuts shorter than 6 s, as one
full batch, with Adam (linear warm-up over 50 steps, grad-norm clip 5), and prints the CTC loss per
output frame and the share of non-blank frames every 25 steps. ``--cmvn`` turns on the encoder's global
CMVN (``encoder.global_cmvn``) with these utterances' mean and variance per dimension. Not a test: a
diagnostic that prints numbers.

    .venv/bin/python bench/overfit_ctc.py --cuts egs/minilibri/data/fbank/librispeech_cuts_train.jsonl.gz \
        --bpe-model egs/minilibri/data/lang_bpe_64/bpe.model --steps 200 --lr 1e-3 [--cmvn]

Run from the directory the cuts' feature paths are relative to (``egs/minilibri``) or with absolute paths.
"""

from __future__ import annotations

import argparse
import random
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuts", required=True, help="lhotse cuts with precomputed fbank features")
    p.add_argument("--bpe-model", required=True, help="sentencepiece model (its size sets the CTC vocabulary)")
    p.add_argument("--preset", default="mini")
    p.add_argument("--num-utts", type=int, default=8)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--cmvn", action="store_true", help="mean/variance-normalise the input per dimension")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from lhotse import load_manifest_lazy

    from speechkd.losses.ctc import ctc_loss
    from speechkd.models.asr import AsrModel
    from speechkd.text.tokenizer import Tokenizer

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    tok = Tokenizer(args.bpe_model)
    cuts = [c for c in load_manifest_lazy(args.cuts) if c.duration < 6][: args.num_utts]
    feats = [torch.from_numpy(c.load_features()) for c in cuts]
    lens = torch.tensor([f.shape[0] for f in feats])
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)  # (N, T, 80)
    tokens = tok.encode([c.supervisions[0].text for c in cuts])
    model = AsrModel.from_preset(
        args.preset,
        ["use_transducer=false", f"vocab_size={tok.vocab_size}", f"encoder.global_cmvn={str(args.cmvn).lower()}"],
    )
    if args.cmvn:  # the model's own input normalisation, with statistics of these utterances
        every = torch.cat(feats)
        model.encoder.input_norm.set_stats(every.mean(0), every.std(0), len(cuts))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 50)
        enc = model.encode(x, lens)
        log_probs = model.ctc_log_probs(enc.out)  # (N, T', V)
        loss = ctc_loss(log_probs, enc.out_lens, tokens, blank=tok.blank_id, reduction="sum") / enc.out_lens.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if step % 25 == 0 or step == args.steps - 1:
            nonblank = (log_probs.argmax(-1) != tok.blank_id).float().mean().item()
            print(f"step {step} loss/frame {loss.item():.3f} non-blank {nonblank:.3f} "
                  f"({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

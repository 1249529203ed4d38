"""A few DDP training steps of the toy task, for ``torchrun``-based tests and manual checks.

    python -m torch.distributed.run --standalone --nproc_per_node 2 \
        -m speechkd.testing.ddp_smoke --work-dir /tmp/ddp

Every rank trains the toy model on toy cuts (made by rank 0 before the others read them) and writes
``<work-dir>/result.rank{R}.json`` with its final counters and a checksum of its parameters. On
rank 1 the task skips its second batch on purpose, to exercise the cross-rank skip agreement.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from speechkd.tasks.base import LossOutput
from speechkd.testing.toy import ToyCtcTask, ToyModel, ToyTokenizer, make_toy_cuts

SKIP_REASON = "ddp smoke: rank 1 skips its 2nd batch"


class _SkipOnceTask(ToyCtcTask):
    def __init__(self, rank: int, skip_call: int) -> None:
        super().__init__()
        self.rank, self.skip_call, self.calls = rank, skip_call, 0

    def compute_loss(self, model: torch.nn.Module, batch: dict[str, Any], training: bool) -> LossOutput:
        if training:
            self.calls += 1
            if self.rank == 1 and self.calls == self.skip_call:
                return LossOutput.skip(SKIP_REASON)
        return super().compute_loss(model, batch, training)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from speechkd.data.datamodule import AsrDataModule, DataConfig
    from speechkd.training import dist as sdist
    from speechkd.training.trainer import Trainer, TrainerConfig

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work-dir", type=Path, required=True)
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--num-cuts", type=int, default=16)
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    info, _ = sdist.init_distributed()
    if info.is_main:
        make_toy_cuts(args.work_dir / "audio", num_cuts=args.num_cuts).to_file(args.work_dir / "cuts.jsonl.gz")
    sdist.barrier()
    from lhotse import CutSet

    cuts = CutSet.from_file(args.work_dir / "cuts.jsonl.gz")
    dm = AsrDataModule(
        DataConfig(features="on_the_fly", max_duration=5.0, num_buckets=2, num_workers=0, max_cut_duration=3.0),
        tokenizer=ToyTokenizer(),
    )
    torch.manual_seed(0)
    cfg = TrainerConfig(
        num_epochs=3, max_steps=args.max_steps, log_every_n=1, save_every_n=2, valid_every_n=2, progress_bar=False, tensorboard=False
    )
    trainer = Trainer(cfg, ToyModel(), _SkipOnceTask(info.rank, skip_call=2), dm, cuts, cuts, args.work_dir / "exp")
    state = trainer.fit(resume=False)
    with torch.no_grad():
        checksum = float(sum(p.double().sum() for p in trainer.model.parameters()))
    result = {"rank": info.rank, "world_size": info.world_size, "step": state.step, "skipped": state.skipped,
              "checksum": checksum, "valid_loss": state.last_valid_loss}
    (args.work_dir / f"result.rank{info.rank}.json").write_text(json.dumps(result))
    sdist.cleanup_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

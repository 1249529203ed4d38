"""Two CPU processes under torchrun (gloo): both ranks train, agree on skips and weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 180


def test_torchrun_two_ranks(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "speechkd.testing.ddp_smoke", "--work-dir", str(tmp_path), "--max-steps", "4"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = [json.loads((tmp_path / f"result.rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in res] == [2, 2]
    assert [r["step"] for r in res] == [4, 4]
    # rank 1 skipped its 2nd batch on purpose; rank 0 skipped the same step because of it
    assert res[1]["skipped"] == {"ddp smoke: rank 1 skips its 2nd batch": 1}
    assert res[0]["skipped"] == {"skipped on another rank": 1}
    # gradients were averaged: identical weights on both ranks
    assert res[0]["checksum"] == res[1]["checksum"]
    # distributed validation: same all-reduced loss on both ranks
    assert res[0]["valid_loss"] is not None and res[0]["valid_loss"] == res[1]["valid_loss"]
    exp = tmp_path / "exp"
    for r in (0, 1):
        text = (exp / "log" / f"train.log.rank{r}").read_text()
        assert f"rank {r} of 2" in text and "epoch 1 step 1:" in text
    assert sorted(p.name for p in exp.glob("checkpoint-*.pt")) == ["checkpoint-2.pt", "checkpoint-4.pt"]
    import torch

    ckpt = torch.load(exp / "checkpoint-4.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == 4 and ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2


def test_resolve_device_defaults_to_this_ranks_gpu(monkeypatch):
    from speechkd.training import dist as d

    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(d.torch.cuda, "is_available", lambda: True)
    assert d.resolve_device(None) == d.resolve_device("auto") == "cuda:3"
    assert d.resolve_device("cuda") == "cuda:3" and d.resolve_device("cuda:1") == "cuda:1"
    assert d.resolve_device("cpu") == "cpu"
    monkeypatch.setattr(d.torch.cuda, "is_available", lambda: False)
    assert d.resolve_device("auto") == "cpu"


def test_decode_extract_probe_and_label_commands_take_a_device():
    from speechkd.cli import build_parser

    parser = build_parser()
    for argv in (["asr", "decode", "--exp-dir", "e", "--parts", "p"],
                 ["distill", "extract-targets", "--cuts-dir", "c", "--parts", "p", "--output-dir", "o"],
                 ["distill", "evaluate-upstream", "--exp-dir", "e", "--cuts-dir", "c", "--bpe-model", "b",
                  "--train-parts", "p", "--test-parts", "t"]):
        assert parser.parse_args(argv).device == "auto", argv
        assert parser.parse_args([*argv, "--device", "cuda:1"]).device == "cuda:1"

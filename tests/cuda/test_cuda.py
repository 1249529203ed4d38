"""GPU checks (``pytest -m cuda``; run by bench/gpu_check.sh). Every test skips, with the reason, without CUDA."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
NO_CUDA = "no CUDA device (torch.cuda.is_available() is False)"
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]


def _rnnt_inputs(seed=0, B=3, T=40, S=10, V=50):
    g = torch.Generator().manual_seed(seed)
    lm, am = torch.randn(B, S + 1, V, generator=g), torch.randn(B, T, V, generator=g)
    symbols = torch.randint(1, V, (B, S), generator=g)
    boundary = torch.tensor([[0, 0, S, T], [0, 0, S - 3, T - 7], [0, 0, 2, T - 20]])
    return lm, am, symbols, boundary


def _pruned_recipe(lm, am, symbols, boundary, backend):
    from speechkd.losses import rnnt

    simple, (pxg, pyg) = rnnt.rnnt_loss_smoothed(lm, am, symbols, 0, 0.25, 0.0, boundary, reduction="sum",
                                                 return_grad=True, backend=backend)
    ranges = rnnt.get_rnnt_prune_ranges(pxg, pyg, boundary, 5, backend=backend)
    am_p, lm_p = rnnt.do_rnnt_pruning(am, lm, ranges, backend=backend)
    pruned = rnnt.rnnt_loss_pruned(torch.tanh(am_p + lm_p), symbols, ranges, 0, boundary, reduction="sum",
                                   backend=backend)
    return simple, pruned


@pytest.mark.parametrize("backend", ["portable", "k2"])
def test_rnnt_losses_on_cuda_equal_cpu(backend):
    from speechkd.losses.rnnt import k2_available

    if backend == "k2" and not k2_available():
        pytest.skip("k2 is not installed (import k2 fails)")
    lm, am, symbols, boundary = _rnnt_inputs()
    out = {}
    for dev in ("cpu", "cuda"):
        lm_d, am_d = lm.to(dev).requires_grad_(True), am.to(dev).requires_grad_(True)
        simple, pruned = _pruned_recipe(lm_d, am_d, symbols.to(dev), boundary.to(dev), backend)
        grads = torch.autograd.grad(simple + pruned, [lm_d, am_d])
        out[dev] = [t.detach().cpu() for t in (simple, pruned, *grads)]
    for a, b in zip(out["cpu"], out["cuda"]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_ctc_loss_on_cuda_equals_cpu():
    from speechkd.losses.ctc import ctc_loss

    g = torch.Generator().manual_seed(1)
    log_probs = torch.randn(3, 30, 20, generator=g).log_softmax(-1)
    lens = torch.tensor([30, 25, 12])
    targets = [[1, 2, 3, 4], [5, 5, 6], [7]]
    cpu = ctc_loss(log_probs, lens, targets, blank=0, reduction="sum")
    cuda = ctc_loss(log_probs.cuda(), lens.cuda(), targets, blank=0, reduction="sum")
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-5, atol=1e-4)


def test_streaming_forward_equals_chunk_masked_forward_on_cuda():
    from speechkd.models import EncoderConfig
    from speechkd.models.conformer import ConformerEncoder

    torch.manual_seed(3)
    enc = ConformerEncoder(EncoderConfig(d_model=32, num_layers=2, num_heads=4, ff_dim=64, conv_kernel=5,
                                         subsampling_channels=8, dropout=0.0, causal=True)).cuda().eval()
    x = torch.randn(2, 61, 80, generator=torch.Generator().manual_seed(1)).cuda()
    lens = torch.tensor([61, 38]).cuda()
    chunk, left = 3, 6
    with torch.no_grad():
        ref = enc(x, lens, chunk, left)
        states, step, outs = enc.init_states(2, left), 4 * chunk, []
        for i in range(math.ceil(x.size(1) / step)):
            xc = F.pad(x[:, i * step : (i + 1) * step], (0, 0, 0, step - x[:, i * step : (i + 1) * step].size(1)))
            out, _, states = enc.streaming_forward(xc, (lens - i * step).clamp(0, step), states)
            outs.append(out)
    got = torch.cat(outs, dim=1)
    for n, length in enumerate(ref.out_lens.tolist()):
        torch.testing.assert_close(got[n, :length], ref.out[n, :length], atol=1e-4, rtol=0)


def test_amp_bf16_loss_equals_fp32_within_tolerance():
    from bench.bench_train_step import make_batch  # noqa: F401 - the same synthetic batch as the throughput bench
    from speechkd.data.collate import move_batch
    from speechkd.tasks.asr import AsrLossConfig, AsrTask
    from speechkd.training.asr_experiment import build_asr_model, load_experiment_config

    cfg = load_experiment_config(None, ["model_preset=mini", "model.encoder.dropout=0.0"], vocab_size=500)
    model = build_asr_model(cfg).cuda().eval()
    model.encoder.input_norm.set_stats(torch.zeros(80), torch.ones(80), 1)
    task = AsrTask(AsrLossConfig(warmup_steps=0))
    batch = move_batch(make_batch(4, 6.0, 500, seed=0), torch.device("cuda"))
    with torch.no_grad():
        fp32 = task.compute_loss(model, batch, False).loss
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = task.compute_loss(model, batch, False).loss
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16)
    assert abs(float(bf16) - float(fp32)) <= 0.02 * abs(float(fp32)), (float(bf16), float(fp32))


def test_two_process_nccl_ddp_step(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip(f"NCCL DDP needs 2 GPUs, found {torch.cuda.device_count()}")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "speechkd.testing.ddp_smoke", "--work-dir", str(tmp_path), "--max-steps", "4"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = [json.loads((tmp_path / f"result.rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["step"] for r in res] == [4, 4] and res[0]["checksum"] == res[1]["checksum"]
    assert "cuda" in (tmp_path / "exp" / "log" / "train.log.rank0").read_text()

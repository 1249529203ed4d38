"""ONNX export in sherpa-onnx's contracts: PyTorch equality, sherpa-onnx decoding, metadata validation.

Every sherpa-onnx run happens in a subprocess: sherpa-onnx terminates its process on a bad model.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("sherpa_onnx")

from speechkd.errors import SpeechkdError  # noqa: E402
from speechkd.export.metadata import read_metadata, read_tokens, validate_export_dir  # noqa: E402
from speechkd.export.modules import StreamingConformerEncoder  # noqa: E402
from speechkd.export.onnx import add_metadata, export_onnx  # noqa: E402
from speechkd.models import AsrModel, AsrModelConfig, EncoderConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 20
UNK_ID = 2
CHUNK, LEFT = 4, 8  # streaming export: encoder frames per chunk, left context
# ONNX Runtime vs PyTorch on the same float32 graph: observed max |diff| ~1e-6.
ENC_ATOL = 1e-4
RATE = 16000


def _write_tone_cuts(out_dir: Path, n: int = 4, seed: int = 0):
    """Cuts of tone sequences (changing pitch and loudness every 0.2 s) plus noise, 1-2.4 s each."""
    import soundfile as sf
    from lhotse import CutSet, Recording, SupervisionSegment

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    cuts = []
    for i in range(n):
        segs = []
        for _ in range(int(rng.integers(5, 13))):
            t = np.arange(int(0.2 * RATE)) / RATE
            segs.append(rng.uniform(0.05, 0.5) * np.sin(2 * np.pi * rng.uniform(100, 3000) * t))
        audio = (np.concatenate(segs) + 0.01 * rng.standard_normal(len(segs) * len(segs[0]))).astype(np.float32)
        path = out_dir / f"tone-{i}.flac"
        sf.write(path, audio, RATE)
        rec = Recording.from_file(path, recording_id=f"tone-{i}")
        cut = rec.to_cut()
        cut.supervisions = [SupervisionSegment(f"tone-{i}", rec.id, 0.0, rec.duration, text="A B")]
        cuts.append(cut)
    return CutSet.from_cuts(cuts)


def _features(cuts):
    from speechkd.data.features import make_fbank_extractor

    ext = make_fbank_extractor()
    return [torch.from_numpy(ext.extract(c.load_audio()[0], RATE)) for c in cuts]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random causal model with CTC + transducer, CMVN from the test audio, exports of each kind."""
    root = tmp_path_factory.mktemp("export")
    cuts = _write_tone_cuts(root / "audio")
    feats = _features(cuts)
    torch.manual_seed(0)
    cfg = AsrModelConfig(
        encoder=EncoderConfig(d_model=32, num_layers=2, num_heads=4, ff_dim=64, conv_kernel=5,
                              subsampling_channels=8, dropout=0.0, causal=True, global_cmvn=True),
        vocab_size=VOCAB, decoder_dim=16, joiner_dim=16,
    )
    model = AsrModel(cfg).eval()
    allf = torch.cat(feats)
    model.encoder.input_norm.set_stats(allf.mean(0), allf.std(0), len(feats))
    with torch.no_grad():  # sharper acoustic side: hypotheses depend on the frames
        model.joiner.encoder_proj.weight.mul_(4.0)
        model.joiner.output_linear.weight.mul_(4.0)
        model.ctc_output.weight.mul_(4.0)
        # sherpa-onnx's transducer search treats <unk> as blank (documented difference): keep it out.
        model.joiner.output_linear.bias[UNK_ID] = -100.0
    tokens = root / "tokens.txt"
    symbols = ["<blk>", "<sos/eos>", "<unk>"] + [f"\u2581{chr(ord('A') + i)}" for i in range(VOCAB - 3)]
    tokens.write_text("".join(f"{s} {i}\n" for i, s in enumerate(symbols)), encoding="utf-8")
    dirs = {}
    for kind in ("offline-transducer", "streaming-transducer", "ctc"):
        dirs[kind] = export_onnx(model, tokens, root / kind, kind, chunk_size=CHUNK, left_context=LEFT,
                                 int8=kind != "ctc")
    cuts_dir = root / "cuts"
    cuts_dir.mkdir()
    cuts.to_file(cuts_dir / "librispeech_cuts_toy.jsonl.gz")
    return {"model": model, "cuts": cuts, "feats": feats, "dirs": dirs, "root": root, "cuts_dir": cuts_dir,
            "tokens": read_tokens(tokens)}


def _run_sherpa(runs: list[tuple[Path, bool]], cuts_path: Path) -> list[list[list[int]]]:
    """Token ids per cut from sherpa-onnx for each (export dir, int8), all in one subprocess."""
    code = (
        "import json, sys\n"
        "from lhotse import CutSet\n"
        "from speechkd.export.metadata import read_tokens\n"
        "from speechkd.export.sherpa_decode import sherpa_decode_cuts, symbols_to_ids\n"
        f"cuts = CutSet.from_file({str(cuts_path)!r})\n"
        "out = []\n"
        f"for d, int8 in {[(str(d), q) for d, q in runs]!r}:\n"
        "    run = sherpa_decode_cuts(d, cuts, int8=int8)\n"
        "    tok = read_tokens(d + '/tokens.txt')\n"
        "    out.append([symbols_to_ids(h.tokens, tok) for h in run.hyps])\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


SHERPA_RUNS = [("offline-transducer", False), ("ctc", False), ("streaming-transducer", False),
               ("offline-transducer", True), ("streaming-transducer", True)]


@pytest.fixture(scope="module")
def sherpa_hyps(setup):
    """{(kind, int8): token ids per cut} decoded by sherpa-onnx."""
    runs = [(setup["dirs"][kind], int8) for kind, int8 in SHERPA_RUNS]
    return dict(zip(SHERPA_RUNS, _run_sherpa(runs, setup["cuts_dir"] / "librispeech_cuts_toy.jsonl.gz")))


def _ort(path: Path, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_offline_encoders_match_pytorch(setup):
    model = setup["model"]
    x = torch.randn(2, 131, 80)
    lens = torch.tensor([131, 90])
    with torch.no_grad():
        enc = model.encoder(x, lens)
        ref_proj = model.joiner.encoder_proj(enc.out)
        ref_ctc = model.ctc_log_probs(enc.out)
    feeds = {"x": x.numpy(), "x_lens": lens.numpy()}
    out, out_lens = _ort(setup["dirs"]["offline-transducer"] / "encoder.onnx", feeds)
    lp, lp_lens = _ort(setup["dirs"]["ctc"] / "model.onnx", feeds)
    assert out_lens.tolist() == lp_lens.tolist() == enc.out_lens.tolist() == [33, 23]
    assert lp.shape[2] == VOCAB
    for n, length in enumerate(enc.out_lens.tolist()):
        np.testing.assert_allclose(out[n, :length], ref_proj[n, :length].numpy(), atol=ENC_ATOL, rtol=0)
        np.testing.assert_allclose(lp[n, :length], ref_ctc[n, :length].numpy(), atol=ENC_ATOL, rtol=0)


def test_streaming_encoder_matches_chunked_pytorch(setup):
    """ONNX chunk by chunk (caches carried as sherpa-onnx carries them) == chunk-masked full forward."""
    model = setup["model"]
    num_chunks, step = 7, CHUNK * 4
    x = torch.randn(2, num_chunks * step, 80)
    with torch.no_grad():
        ref = model.joiner.encoder_proj(
            model.encoder(x, torch.full((2,), x.size(1)), chunk_size=CHUNK, left_context=LEFT).out
        ).numpy()
    sess = ort.InferenceSession(str(setup["dirs"]["streaming-transducer"] / "encoder.onnx"))
    attn, conv = (t.numpy() for t in StreamingConformerEncoder(model, CHUNK, LEFT).init_caches(2))
    meta = read_metadata(setup["dirs"]["streaming-transducer"] / "encoder.onnx")
    assert attn.shape == (int(meta["num_encoder_layers"]), int(meta["left_context"]), 2, int(meta["encoder_dim"]))
    assert conv.shape[1] == int(meta["cnn_module_kernel"]) - 1 and int(meta["T"]) == step
    outs = []
    for i in range(num_chunks):
        processed = np.full(2, i * step, dtype=np.int64)
        o, attn, conv = sess.run(None, {"x": x[:, i * step : (i + 1) * step].numpy(), "attn_cache": attn,
                                        "conv_cache": conv, "processed_frames": processed})
        outs.append(o)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), ref, atol=ENC_ATOL, rtol=0)
    # the caches matter: a chunk decoded with fresh caches differs from the reference
    fresh_attn, fresh_conv = (t.numpy() for t in StreamingConformerEncoder(model, CHUNK, LEFT).init_caches(2))
    o, _, _ = sess.run(None, {"x": x[:, -step:].numpy(), "attn_cache": fresh_attn, "conv_cache": fresh_conv,
                              "processed_frames": np.full(2, (num_chunks - 1) * step, dtype=np.int64)})
    assert np.abs(o - ref[:, -CHUNK:]).max() > 1e-3


def _ours_offline(model, feats, ctc: bool) -> list[list[int]]:
    from speechkd.decoding.ctc import ctc_greedy_search
    from speechkd.decoding.transducer import greedy_search

    hyps = []
    with torch.no_grad():
        for f in feats:
            enc = model.encoder(f[None], torch.tensor([f.size(0)]))
            if ctc:
                hyps += ctc_greedy_search(model.ctc_log_probs(enc.out), enc.out_lens)
            else:
                hyps += greedy_search(model, enc.out, enc.out_lens)
    return hyps


def _ours_streaming(model, cuts) -> list[list[int]]:
    """Our chunk-wise greedy search on the frames sherpa-onnx decodes: the audio plus the tail of
    silence sherpa_decode_cuts adds, cut to whole chunks (a chunk runs once a later frame exists)."""
    from speechkd.data.features import make_fbank_extractor
    from speechkd.decoding.streaming import streaming_greedy_search

    ext, step = make_fbank_extractor(), CHUNK * 4
    hyps = []
    for cut in cuts:
        audio = np.concatenate([cut.load_audio()[0], np.zeros(int(round((step + 2) * 0.01 * RATE)), np.float32)])
        f = torch.from_numpy(ext.extract(audio, RATE))
        frames = (f.size(0) - 1) // step * step
        hyps += streaming_greedy_search(model, f[None, :frames], torch.tensor([frames]), CHUNK, LEFT)
    return hyps


@pytest.mark.parametrize("kind", ["offline-transducer", "ctc", "streaming-transducer"])
def test_sherpa_greedy_equals_our_greedy(setup, sherpa_hyps, kind):
    got = sherpa_hyps[(kind, False)]
    if kind == "streaming-transducer":
        want = _ours_streaming(setup["model"], setup["cuts"])
    else:
        want = _ours_offline(setup["model"], setup["feats"], ctc=kind == "ctc")
    assert len({t for h in want for t in h}) >= 3, "degenerate test model: hypotheses use too few tokens"
    assert got == want


@pytest.mark.parametrize("kind", ["offline-transducer", "streaming-transducer"])
def test_int8_export_is_smaller_and_decodes(setup, sherpa_hyps, kind):
    d = setup["dirs"][kind]
    validate_export_dir(d, int8=True)
    assert (d / "encoder.int8.onnx").stat().st_size < (d / "encoder.onnx").stat().st_size
    got = sherpa_hyps[(kind, True)]
    assert len(got) == len(setup["cuts"]) and all(got)


def _drop_key(path: Path, key: str) -> None:
    import onnx

    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    onnx.save(model, str(path))
    add_metadata(path, dict(kept))


@pytest.mark.parametrize("kind,component,key", [
    ("offline-transducer", "decoder", "context_size"),
    ("streaming-transducer", "encoder", "decode_chunk_len"),
    ("ctc", "model", "vocab_size"),
])
def test_validator_catches_missing_metadata_key(setup, tmp_path, kind, component, key):
    import shutil

    d = tmp_path / kind
    shutil.copytree(setup["dirs"][kind], d)
    _drop_key(d / f"{component}.onnx", key)
    with pytest.raises(SpeechkdError, match=rf"{component}\.onnx: metadata key '{key}' is missing"):
        validate_export_dir(d)


def test_sherpa_itself_dies_on_the_missing_key(setup, tmp_path):
    """Why the validator exists: sherpa-onnx exits the process instead of raising."""
    import shutil

    d = tmp_path / "offline"
    shutil.copytree(setup["dirs"]["offline-transducer"], d)
    _drop_key(d / "decoder.onnx", "context_size")
    code = (
        "import sherpa_onnx\n"
        f"d = {str(d)!r}\n"
        "sherpa_onnx.OfflineRecognizer.from_transducer(d + '/encoder.onnx', d + '/decoder.onnx',"
        " d + '/joiner.onnx', d + '/tokens.txt')\n"
        "print('constructed')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "constructed" not in out.stdout


def test_validator_checks_tokens_and_kind(setup, tmp_path):
    import shutil

    d = tmp_path / "ctc"
    shutil.copytree(setup["dirs"]["ctc"], d)
    lines = (d / "tokens.txt").read_text().splitlines()
    (d / "tokens.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(SpeechkdError, match=f"vocab_size={VOCAB} but tokens.txt has {VOCAB - 1}"):
        validate_export_dir(d)
    with pytest.raises(SpeechkdError, match="no int8 models"):
        validate_export_dir(setup["dirs"]["ctc"], int8=True)
    with pytest.raises(SpeechkdError, match="export.yaml not found"):
        validate_export_dir(tmp_path)


def test_export_rejects_bad_requests(setup, tmp_path):
    model = setup["model"]
    tokens = setup["dirs"]["ctc"] / "tokens.txt"
    with pytest.raises(SpeechkdError, match="left_context=-1"):
        export_onnx(model, tokens, tmp_path / "s", "streaming-transducer", chunk_size=4, left_context=-1)
    short = tmp_path / "tokens.txt"
    short.write_text("".join(f"t{i} {i}\n" for i in range(VOCAB - 1)))
    with pytest.raises(SpeechkdError, match="vocab_size is 20"):
        export_onnx(model, short, tmp_path / "o", "offline-transducer")


def test_cli_decode_writes_scoring_files(setup, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "speechkd", "export", "decode", "--export-dir", str(setup["dirs"]["ctc"]),
         "--cuts-dir", str(setup["cuts_dir"]), "--parts", "toy", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "toy\tsherpa-ctc\tWER" in out.stdout
    summary = (tmp_path / "wer-summary.tsv").read_text().splitlines()
    assert summary[1].startswith("toy\tsherpa-ctc\t")
    assert (tmp_path / "recogs-toy-sherpa-ctc.txt").is_file()
    rtf = (tmp_path / "rtf-toy-sherpa-ctc.txt").read_text()
    assert "rtf=" in rtf and float(rtf.split("audio_s=")[1].split()[0]) > 0

"""``speechkd export onnx|validate|decode``: deployable students for sherpa-onnx (stdlib imports only)."""

from __future__ import annotations

import argparse

KINDS = ("offline-transducer", "streaming-transducer", "ctc")  # = speechkd.export.metadata.KINDS

ONNX_EPILOG = """\
Kinds (sherpa-onnx entry point in brackets):
  offline-transducer    encoder.onnx decoder.onnx joiner.onnx  [OfflineRecognizer.from_transducer]
  streaming-transducer  the same, encoder in the online "conformer" contract for one
                        --chunk-size/--left-context  [OnlineRecognizer.from_transducer]
  ctc                   model.onnx (log-probs)  [OfflineRecognizer.from_zipformer_ctc]
Each directory also gets tokens.txt and export.yaml; --int8 adds *.int8.onnx (onnxruntime dynamic
quantisation). The global CMVN stays inside the encoder; training-only heads are left out."""


def _onnx(args: argparse.Namespace) -> int:
    from speechkd.export.onnx import export_experiment

    out = export_experiment(
        args.exp_dir, args.output_dir, args.kind, checkpoint=args.checkpoint, bpe_model=args.bpe_model,
        chunk_size=args.chunk_size, left_context=args.left_context, int8=args.int8,
    )
    print(out)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from speechkd.export.metadata import validate_export_dir

    for int8 in (False, True) if args.int8 else (False,):
        info = validate_export_dir(args.export_dir, int8=int8)
        print(f"{info.directory}\t{info.kind}\t{'int8' if int8 else 'fp32'}\tok")
    return 0


def _decode(args: argparse.Namespace) -> int:
    from speechkd.export.sherpa_decode import sherpa_decode

    results = sherpa_decode(
        args.export_dir, args.cuts_dir, args.parts, args.out_dir, int8=args.int8, num_threads=args.num_threads,
        tag=args.tag, feed_seconds=args.feed_seconds, tail_padding_seconds=args.tail_padding,
    )
    for (part, tag), stats in results.items():
        print(f"{part}\t{tag}\tWER {stats.wer:.2f}%")
    return 0


def register(reg) -> None:  # noqa: ANN001 - CommandRegistry (avoid import cycle)
    p = reg.command("export", "onnx", help="export an ASR experiment's checkpoint to ONNX for sherpa-onnx", func=_onnx)
    p.epilog = ONNX_EPILOG
    p.add_argument("--exp-dir", required=True, help="experiment directory of `speechkd asr train`")
    p.add_argument("--output-dir", required=True, help="export directory (created)")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: averaged.pt, else newest epoch)")
    p.add_argument("--bpe-model", default=None, help="default: the one used for training")
    p.add_argument("--chunk-size", type=int, default=16, help="streaming: encoder frames (40 ms) per chunk")
    p.add_argument("--left-context", type=int, default=64, help="streaming: attention left context in encoder frames")
    p.add_argument("--int8", action="store_true", help="also write int8 dynamically quantised *.int8.onnx files")

    p = reg.command("export", "validate", help="check an export directory against its sherpa-onnx contract",
                    func=_validate)
    p.add_argument("--export-dir", required=True)
    p.add_argument("--int8", action="store_true", help="check the *.int8.onnx files too")

    p = reg.command("export", "decode", help="decode test sets with sherpa-onnx and score them", func=_decode)
    p.add_argument("--export-dir", required=True, help="directory written by `speechkd export onnx`")
    p.add_argument("--cuts-dir", required=True, help="dir with librispeech_cuts_<part>.jsonl.gz (audio is read)")
    p.add_argument("--parts", nargs="+", required=True, help="test parts, e.g. dev test-clean test-other")
    p.add_argument("--out-dir", required=True, help="where recogs/errs/wer-summary.tsv go (e.g. EXP_DIR/decode)")
    p.add_argument("--int8", action="store_true", help="decode with the *.int8.onnx files")
    p.add_argument("--num-threads", type=int, default=1, help="onnxruntime threads")
    p.add_argument("--tag", default=None, help="result tag (default: sherpa-<kind...>[-int8])")
    p.add_argument("--feed-seconds", type=float, default=0.1, help="streaming: audio fed per accept_waveform call")
    p.add_argument("--tail-padding", type=float, default=0.0,
                   help="streaming: seconds of silence after each utterance (at least one chunk is always added)")

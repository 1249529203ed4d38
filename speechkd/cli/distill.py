"""``speechkd distill extract-targets|train|export|evaluate-upstream``: DistilHuBERT stages (stdlib imports only)."""

from __future__ import annotations

import argparse

TRAIN_EPILOG = """\
The config YAML has sections teacher / student / loss / data / trainer. Any value can be overridden:
  --set student.pred_head_layers=[4,8,12] --set loss.mode=stored --set trainer.max_steps=1000
loss.mode=on_the_fly runs the frozen teacher every step; loss.mode=stored reads the hidden states
written by `speechkd distill extract-targets` (give --targets-dir; its metadata.yaml must match the
teacher and layers of this config). Training resumes from the newest checkpoint in EXP_DIR unless
--no-resume. Multi-GPU: torchrun --nproc_per_node N -m speechkd distill train ..."""


def _common_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="experiment YAML (sections teacher/student/loss/data/trainer)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--teacher", default=None, help="teacher checkpoint dir or hub id (overrides teacher.path)")


def _extract(args: argparse.Namespace) -> int:
    from speechkd.training.distill_experiment import extract_targets

    reports = extract_targets(
        args.config, args.set, args.cuts_dir, args.parts, args.output_dir, teacher_path=args.teacher,
        max_duration=args.max_duration, dtype=args.dtype, device=args.device,
    )
    for r in reports:
        print(f"{r.part}\t{r.num_cuts} cuts\t{r.num_frames} frames\tskipped {sum(map(len, r.skipped.values()))}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from speechkd.training.distill_experiment import train_distill

    train_distill(
        args.config, args.set, args.exp_dir, args.cuts_dir, args.train_parts, args.valid_parts,
        teacher_path=args.teacher, targets_dir=args.targets_dir, resume=not args.no_resume,
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from speechkd.training.distill_experiment import export_distill

    print(export_distill(args.exp_dir, args.out_dir, checkpoint=args.checkpoint))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from speechkd.evaluation.upstream import evaluate_upstream

    path = evaluate_upstream(
        args.exp_dir, args.cuts_dir, args.bpe_model, args.train_parts, args.dev_parts, args.test_parts,
        student_dir=args.student_dir, teacher_path=args.teacher, config_path=args.config, overrides=args.set,
        out_dir=args.out_dir, checkpoint=args.checkpoint, device=args.device,
    )
    print(path.read_text())
    return 0


def register(reg) -> None:  # noqa: ANN001 - CommandRegistry (avoid an import cycle)
    p = reg.command(
        "distill", "extract-targets", func=_extract,
        help="run the teacher once and store its target layers (fp16) on the cuts, with metadata.yaml",
    )
    _common_config(p)
    p.add_argument("--cuts-dir", required=True, help="dir with librispeech_cuts_<part>.jsonl.gz (with recordings)")
    p.add_argument("--parts", nargs="+", required=True, help="parts to extract, e.g. train-clean-100 dev-clean")
    p.add_argument("--output-dir", required=True, help="targets dir: cuts manifests, HDF5 arrays, metadata.yaml")
    p.add_argument("--max-duration", type=float, default=60.0, help="seconds of audio per teacher batch")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="storage dtype")
    p.add_argument("--device", default="auto",
                   help="teacher device: cpu, cuda, cuda:N or auto (default: CUDA when available, cuda:$LOCAL_RANK "
                        "under torchrun)")

    p = reg.command("distill", "train", help="distil a teacher into a DistilHuBERT student", func=_train)
    p.epilog = TRAIN_EPILOG
    _common_config(p)
    p.add_argument("--exp-dir", required=True, help="experiment directory (checkpoints, logs, config)")
    p.add_argument("--cuts-dir", required=True, help="dir with librispeech_cuts_<part>.jsonl.gz (on-the-fly mode)")
    p.add_argument("--train-parts", nargs="+", required=True)
    p.add_argument("--valid-parts", nargs="*", default=[])
    p.add_argument("--targets-dir", default=None, help="pre-extracted targets (loss.mode=stored); cuts are read there")
    p.add_argument(
        "--no-resume", action="store_true",
        help="start over: the checkpoints of an earlier run in --exp-dir are moved to previous-run-N/ there",
    )

    p = reg.command("distill", "export", help="write the student as a standard transformers checkpoint", func=_export)
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--out-dir", required=True, help="output directory (config.json, model.safetensors, metadata)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: the newest in --exp-dir)")

    p = reg.command(
        "distill", "evaluate-upstream", func=_evaluate,
        help="heads vs teacher (cos/L1), SUPERB-style ASR probe WER (fbank/teacher/student), compression table",
    )
    p.add_argument("--exp-dir", required=True, help="distillation experiment directory")
    p.add_argument("--cuts-dir", required=True, help="dir with librispeech_cuts_<part>.jsonl.gz")
    p.add_argument("--bpe-model", required=True, help="sentencepiece model of the probe's CTC tokens")
    p.add_argument("--train-parts", nargs="+", required=True, help="labelled parts the probes train on")
    p.add_argument("--dev-parts", nargs="*", default=[], help="parts for the head-vs-teacher distances")
    p.add_argument("--test-parts", nargs="+", required=True, help="parts the probes are scored on")
    p.add_argument("--config", default=None, help="evaluation YAML (upstreams, probe.*, rtf_utterances, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="evaluation config override")
    p.add_argument("--teacher", default=None, help="teacher checkpoint (default: the training config's)")
    p.add_argument("--student-dir", default=None, help="exported student (default: export EXP_DIR's newest)")
    p.add_argument("--checkpoint", default=None, help="training checkpoint (default: the newest in --exp-dir)")
    p.add_argument("--out-dir", default=None, help="report directory (default: EXP_DIR/upstream)")
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N or auto (default: CUDA when available, cuda:$LOCAL_RANK under torchrun)")

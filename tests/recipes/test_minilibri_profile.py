"""egs/minilibri/run.sh's main-command profile: what --all-stages adds, checked on the recipe calls run.sh makes.

run.sh runs here in a copy of the repository's shell tree whose method recipes are stubs that write their
arguments to a file, so the test takes a second and says exactly which stages each recipe was asked to run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUB = """#!/usr/bin/env bash
printf '%s\\n' "$(basename "$0") $*" >>"$CALLS"
"""


def run_profile(tmp: Path, *args: str, rc: int = 0, python: str = "true") -> tuple[dict[str, str], str]:
    """Runs a stubbed run.sh --stage 10; returns {recipe: its arguments} (the last call of each) and the log."""
    tree = tmp / "tree"
    shutil.copytree(ROOT / "recipes" / "lib", tree / "recipes" / "lib")
    for name in ("data", "asr", "whisper_pl", "distilhubert", "mvq_kd", "lm2ctc"):
        stub = tree / "recipes" / f"{name}.sh"
        stub.write_text(STUB)
        stub.chmod(0o755)
    egs = tree / "egs" / "minilibri"
    egs.mkdir(parents=True)
    for name in ("run.sh", "path.sh"):
        shutil.copy2(ROOT / "egs" / "minilibri" / name, egs / name)
    shutil.copytree(ROOT / "egs" / "minilibri" / "conf", egs / "conf")
    calls = tmp / "calls.txt"
    env = dict(os.environ, PYTHON=python, CALLS=str(calls))  # "true": stage 39's seed table has nothing to tabulate
    res = subprocess.run(["bash", str(egs / "run.sh"), "--stage", "10", "--exp-dir", str(tmp / "exp"), *args],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == rc, res.stderr[-3000:]
    recipes = {}
    for line in (calls.read_text() if calls.exists() else "").splitlines():
        name, _, rest = line.partition(" ")
        recipes[name] = rest
    calls.unlink(missing_ok=True)
    return recipes, res.stderr


def option(args: str, name: str) -> str:
    """The value after --name in a stub's argument line (values here have no spaces unless quoted lists)."""
    words = args.split(" ")
    return words[words.index(name) + 1]


def test_main_command_leaves_the_extras_out_and_all_stages_brings_them_back(tmp_path: Path) -> None:
    main, log = run_profile(tmp_path)
    assert "Profile: all-stages=false" in log
    # the students stop before ONNX export; the baselines (asr.sh) still export
    assert option(main["whisper_pl.sh"], "--stop-stage") == "39"
    assert option(main["mvq_kd.sh"], "--stop-stage") == "39"
    assert option(main["asr.sh"], "--stop-stage") == "100"
    assert "--probe-overrides upstreams=[fbank,student]" in main["distilhubert.sh"]
    assert "--systems kd --seeds" in main["lm2ctc.sh"] and option(main["lm2ctc.sh"], "--rtf-repeats") == "2"

    full, log = run_profile(tmp_path / "full", "--all-stages", "true")
    assert "Profile: all-stages=true" in log
    assert option(full["whisper_pl.sh"], "--stop-stage") == "100"
    assert option(full["mvq_kd.sh"], "--stop-stage") == "100"
    assert "--probe-overrides upstreams=[fbank,teacher,student]" in full["distilhubert.sh"]
    assert "--systems kd hard --seeds" in full["lm2ctc.sh"] and option(full["lm2ctc.sh"], "--rtf-repeats") == "5"

    # an option given on the command line wins over the profile, and export stages alone skip the students
    mixed, _ = run_profile(tmp_path / "mixed", "--lm2ctc-systems", "hard", "--distill-upstreams", "teacher",
                           "--stage", "40")
    assert "--systems hard --seeds" in mixed["lm2ctc.sh"]
    assert "--probe-overrides upstreams=[teacher]" in mixed["distilhubert.sh"]
    assert "whisper_pl.sh" not in mixed and "mvq_kd.sh" not in mixed


def test_student_configs_are_options_and_are_checked_before_any_stage(tmp_path: Path) -> None:
    main, _ = run_profile(tmp_path)
    assert option(main["whisper_pl.sh"], "--config") == "conf/asr_transducer.yaml"
    assert option(main["mvq_kd.sh"], "--config") == "conf/mvq_kd_whisper_tiny.yaml"
    assert option(main["lm2ctc.sh"], "--config") == "conf/lm2ctc.yaml"
    ys, _ = run_profile(tmp_path / "ys", "--pl-config", "conf/asr_transducer_4h.yaml",
                        "--mvq-config", "conf/mvq_kd_whisper_tiny_4h.yaml")
    assert option(ys["whisper_pl.sh"], "--config") == "conf/asr_transducer_4h.yaml"
    assert option(ys["mvq_kd.sh"], "--config") == "conf/mvq_kd_whisper_tiny_4h.yaml"
    # a missing config of a later method ends the run before the first recipe runs, naming the file
    calls, log = run_profile(tmp_path / "bad", "--mvq-config", "conf/nope.yaml", rc=1)
    assert calls == {} and "config conf/nope.yaml not found" in log
    calls, log = run_profile(tmp_path / "bad2", "--asr-models", "ctc transducer_9h", "--methods", "asr", rc=1)
    assert calls == {} and "config conf/asr_transducer_9h.yaml not found" in log
    # a method left out is not checked
    calls, _ = run_profile(tmp_path / "ok", "--mvq-config", "conf/nope.yaml", "--methods", "asr")
    assert set(calls) == {"data.sh", "asr.sh"}


def test_an_asr_model_without_a_transducer_is_decoded_as_ctc(tmp_path: Path) -> None:
    """run.sh reads model.use_transducer from conf/asr_<name>.yaml (the Whisper-layer CTC baseline is not named ctc)."""
    import sys

    python = tmp_path / "python"  # the real speechkd for `config show`, nothing for the seed table
    python.write_text(f'#!/usr/bin/env bash\nif [ "$3" = config ]; then exec {sys.executable} "$@"; fi\n')
    python.chmod(0o755)
    for i, (models, methods) in enumerate((("transducer whisper_init_ctc", "ctc-greedy"),
                                           ("whisper_init_ctc transducer", "greedy"))):
        (tmp_path / str(i)).mkdir()
        calls, _ = run_profile(tmp_path / str(i), "--methods", "asr", "--asr-models", models, python=str(python))
        assert option(calls["asr.sh"], "--methods") == methods, calls["asr.sh"]


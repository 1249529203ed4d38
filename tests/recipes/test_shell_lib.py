"""recipes/lib/parse_options.sh and lib.sh semantics (small bash scripts run via subprocess), and
shellcheck on every shell script of the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "recipes" / "lib"

OPTION_SCRIPT = """\
#!/usr/bin/env bash
set -euo pipefail
stage=0            # first stage to run
stop_stage=100     # last stage to run
data_dir=data      # where data goes
use_gpu=false      # boolean knob
help_message="Usage: demo.sh [options] <positional>"
. {lib}/parse_options.sh
echo "stage=$stage stop_stage=$stop_stage data_dir=$data_dir use_gpu=$use_gpu rest=$*"
"""


@pytest.fixture()
def demo(tmp_path: Path) -> Path:
    script = tmp_path / "demo.sh"
    script.write_text(OPTION_SCRIPT.format(lib=LIB))
    return script


def run_bash(script: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30, env=env)


def test_options_set_values_dashes_to_underscores(demo: Path) -> None:
    res = run_bash(demo, "--stage", "3", "--stop-stage=7", "--data-dir", "/x y", "--use-gpu", "true", "pos1", "pos2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "stage=3 stop_stage=7 data_dir=/x y use_gpu=true rest=pos1 pos2"


def test_defaults_kept_without_options(demo: Path) -> None:
    res = run_bash(demo)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "stage=0 stop_stage=100 data_dir=data use_gpu=false rest="


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus", "1"], "unknown option --bogus"),
        (["--path", "/tmp"], "unknown option --path"),  # an env variable, not an option of the block
        (["--help-message", "x"], "unknown option --help-message"),
        (["--use-gpu", "yes"], "option --use-gpu is boolean"),
        (["--stage"], "option --stage needs a value"),
    ],
)
def test_bad_options_are_errors(demo: Path, args: list[str], message: str) -> None:
    res = run_bash(demo, *args)
    assert res.returncode == 1
    assert message in res.stderr
    assert res.stdout == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stage", "abc"], "option --stage must be an integer, not 'abc'"),
        (["--stop-stage=1.5"], "option --stop-stage must be an integer, not '1.5'"),
        (["--stage", ""], "option --stage must be an integer, not ''"),
        (["--stage", "3", "--stop-stage", "1"], "empty stage range: --stage 3 comes after --stop-stage 1"),
    ],
)
def test_bad_stage_range_is_an_error(demo: Path, args: list[str], message: str) -> None:
    """These used to exit 0 having run nothing (`integer expression expected`, or no stage in range)."""
    res = run_bash(demo, *args)
    assert res.returncode == 1
    assert message in res.stderr
    assert res.stdout == ""


def test_one_stage_and_negative_stages_are_fine(demo: Path) -> None:
    res = run_bash(demo, "--stage", "3", "--stop-stage", "3")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("stage=3 stop_stage=3 ")
    assert run_bash(demo, "--stage", "-1").returncode == 0


def test_recipe_with_a_bad_stage_fails_before_any_stage() -> None:
    """egs/minilibri/run.sh --stage abc used to print ~30 'integer expression expected' lines, then 'Done'."""
    for args in (["--stage", "abc"], ["--stage", "3", "--stop-stage", "1"]):
        res = subprocess.run(["bash", "egs/minilibri/run.sh", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 1, args
        assert "integer expression expected" not in res.stderr and "Done" not in res.stderr
        assert "run.sh: " in res.stderr and "Stage" not in res.stderr


def test_help_lists_options_defaults_and_comments(demo: Path) -> None:
    res = run_bash(demo, "--stage", "5", "--help")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith("Usage: demo.sh [options] <positional>")
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  --")}
    assert list(lines) == ["--stage", "--stop-stage", "--data-dir", "--use-gpu"]
    assert "[5]" in lines["--stage"] and "first stage to run" in lines["--stage"]  # value after parsing so far
    assert "[false]" in lines["--use-gpu"] and "boolean knob" in lines["--use-gpu"]


LIB_SCRIPT = """\
#!/usr/bin/env bash
set -euo pipefail
. {lib}/lib.sh
dir=$1; key=$2
if ! stage_done 3 "$dir" "$key"; then
  echo RAN
  mark_done 3 "$dir" "$key"
fi
log "finished"
"""


def test_stage_markers_skip_same_key_and_rerun_new_key(tmp_path: Path) -> None:
    script = tmp_path / "lib_demo.sh"
    script.write_text(LIB_SCRIPT.format(lib=LIB))
    first = run_bash(script, str(tmp_path / "d"), "vocab=256")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "RAN\n"
    assert "(lib_demo.sh:9) finished" in first.stderr  # log names the calling file:line
    again = run_bash(script, str(tmp_path / "d"), "vocab=256")
    assert again.stdout == ""
    markers = list((tmp_path / "d" / ".done").iterdir())
    assert len(markers) == 1 and markers[0].name.startswith("stage3.")
    assert f"Stage 3: already done (remove {markers[0]} to redo)" in again.stderr
    other = run_bash(script, str(tmp_path / "d"), "vocab=500")
    assert other.stdout == "RAN\n"
    markers[0].unlink()
    redo = run_bash(script, str(tmp_path / "d"), "vocab=256")
    assert redo.stdout == "RAN\n"


def test_stage_times_rows_for_stages_that_ran(tmp_path: Path) -> None:
    """mark_done appends end/seconds/script/stage/loads/dir/key to the stage-times file, only for stages that ran,
    and leaves no start stamp behind; $SPEECHKD_STAGE_TIMES moves the file."""
    script = tmp_path / "lib_demo.sh"
    script.write_text(LIB_SCRIPT.replace("echo RAN", "sleep 1; echo RAN").format(lib=LIB))
    d = tmp_path / "d"
    assert run_bash(script, str(d), "vocab=256").returncode == 0
    assert run_bash(script, str(d), "vocab=256").stdout == ""  # skipped: no row
    rows = [line.split("\t") for line in (d / "stage_times.tsv").read_text().splitlines()]
    assert rows[0] == ["end", "seconds", "script", "stage", "load_start", "load_end", "dir", "key"]
    assert len(rows) == 2
    end, seconds, script_name, stage, load_start, load_end, dir_, key = rows[1]
    assert 1 <= int(seconds) <= 10 and (script_name, stage, dir_, key) == ("lib_demo.sh", "3", str(d), "vocab=256")
    assert float(load_start) >= 0 and float(load_end) >= 0
    assert not list((d / ".done").glob("*.start"))
    elsewhere = tmp_path / "all" / "times.tsv"
    res = run_bash(script, str(d), "vocab=500", env={**os.environ, "SPEECHKD_STAGE_TIMES": str(elsewhere)})
    assert res.stdout == "RAN\n"
    assert elsewhere.read_text().splitlines()[1].split("\t")[7] == "vocab=500"
    assert len((d / "stage_times.tsv").read_text().splitlines()) == 2


def test_config_sum_follows_the_bases_not_the_path(tmp_path: Path) -> None:
    """config_sum keys a stage on the config with its _base_ files merged: editing a base changes it, moving the
    files or reformatting them does not, and an unreadable config ends the script naming the file."""
    import sys

    script = tmp_path / "sum.sh"
    script.write_text(f"set -euo pipefail\n. {LIB}/lib.sh\nconfig_sum \"$1\"\necho after\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "base.yaml").write_text("trainer:\n  num_epochs: 12\n  lr: 0.002\n")
    (conf / "variant.yaml").write_text("_base_: base.yaml\ntrainer: {num_epochs: 8}\n")

    def sum_of(path: Path) -> str:
        res = subprocess.run(["bash", str(script), str(path)], capture_output=True, text=True, timeout=60,
                             env={**env, "python": sys.executable})
        assert res.returncode == 0, res.stderr
        value, after = res.stdout.split()
        assert after == "after"
        return value

    first = sum_of(conf / "variant.yaml")
    (conf / "base.yaml").write_text("trainer:\n  num_epochs: 12\n  lr: 0.004\n")
    edited = sum_of(conf / "variant.yaml")
    assert edited != first
    (conf / "base.yaml").write_text("# a comment\ntrainer: {num_epochs: 12, lr: 0.004}\n")
    assert sum_of(conf / "variant.yaml") == edited  # the same config written otherwise
    shutil.copytree(conf, tmp_path / "moved")
    assert sum_of(tmp_path / "moved" / "variant.yaml") == edited
    (conf / "variant.yaml").write_text("_base_: gone.yaml\n")
    res = subprocess.run(["bash", str(script), str(conf / "variant.yaml")], capture_output=True, text=True,
                         timeout=60, env={**env, "python": sys.executable})
    assert res.returncode == 1 and "after" not in res.stdout
    assert "gone.yaml" in res.stderr and f"cannot read the config {conf / 'variant.yaml'}" in res.stderr


def test_the_teacher_is_converted_once_for_the_recipes_that_share_it(tmp_path: Path) -> None:
    """convert_ct2_teacher (stage 10 of distilhubert.sh and mvq_kd.sh) keeps its marker beside the converted dir,
    which the conversion replaces: a second recipe converting the same teacher to the same dir skips, another
    source or destination converts again."""
    fake = tmp_path / "fake_python"
    calls = tmp_path / "calls.txt"
    fake.write_text(f"#!/usr/bin/env bash\necho \"$*\" >>{calls}\nmkdir -p \"${{@: -2:1}}\"\n")
    fake.chmod(0o755)
    script = tmp_path / "convert.sh"
    script.write_text(f"set -euo pipefail\n. {LIB}/lib.sh\nconvert_ct2_teacher \"$1\" \"$2\"\n")
    env = {**os.environ, "python": str(fake), "SPEECHKD_STAGE_TIMES": str(tmp_path / "times.tsv")}

    def convert(ct2: str, out: Path) -> str:
        res = subprocess.run(["bash", str(script), ct2, str(out)], capture_output=True, text=True, timeout=30,
                             env=env)
        assert res.returncode == 0, res.stderr
        return res.stderr

    exp = tmp_path / "exp"
    convert(str(tmp_path / "ct2"), exp / "whisper-tiny.en")  # distilhubert.sh
    assert "already done" in convert(str(tmp_path / "ct2"), exp / "whisper-tiny.en")  # mvq_kd.sh
    convert(str(tmp_path / "ct2"), exp / "other")
    convert(str(tmp_path / "ct2-base"), exp / "whisper-tiny.en")
    lines = calls.read_text().splitlines()
    assert [line.split()[-3:] for line in lines] == [
        [str(tmp_path / "ct2"), str(exp / "whisper-tiny.en"), "--overwrite"],
        [str(tmp_path / "ct2"), str(exp / "other"), "--overwrite"],
        [str(tmp_path / "ct2-base"), str(exp / "whisper-tiny.en"), "--overwrite"],
    ]
    assert all(line.startswith("-m speechkd teachers convert-ct2-whisper ") for line in lines)
    res = subprocess.run(["bash", str(script), str(tmp_path / "ct2"), ""], capture_output=True, text=True,
                         timeout=30, env=env)
    assert res.returncode == 1 and "--teacher-ct2-dir needs --teacher-dir" in res.stderr


def test_require_file_names_missing_file(tmp_path: Path) -> None:
    script = tmp_path / "req.sh"
    present = tmp_path / "present.txt"
    present.write_text("x")
    script.write_text(
        textwrap.dedent(
            f"""\
            set -euo pipefail
            . {LIB}/lib.sh
            require_file {present} {tmp_path}/absent.txt -- run stage 1 first
            echo unreachable
            """
        )
    )
    res = run_bash(script)
    assert res.returncode == 1
    assert f"missing file {tmp_path}/absent.txt (run stage 1 first)" in res.stderr
    assert "present.txt" not in res.stderr and res.stdout == ""


def shell_scripts() -> list[Path]:
    """The project's own shell scripts: not the virtual environment, and not what recipes write into
    their data/exp dirs (the command.sh logs)."""
    skip = {".venv", ".git", "node_modules", "data", "exp", "download"}
    return sorted(p for p in ROOT.rglob("*.sh") if not skip.intersection(p.relative_to(ROOT).parts[:-1]))


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean() -> None:
    scripts = shell_scripts()
    assert any(p.name == "parse_options.sh" for p in scripts)
    res = subprocess.run(
        ["shellcheck", "-x", *map(str, scripts)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_recipe_help_and_unknown_option_from_the_repo_root() -> None:
    """run.sh cds to its own dir before parsing: options must still come from its option block
    when it is started by a relative path from elsewhere (the README's `egs/minilibri/run.sh`)."""
    help_out = subprocess.run(["bash", "egs/minilibri/run.sh", "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
    assert help_out.returncode == 0
    text = help_out.stdout + help_out.stderr
    assert "--asr-models" in text and "--methods" in text
    bad = subprocess.run(["bash", "egs/minilibri/run.sh", "--bogus-option", "1"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0
    assert "bogus" in bad.stdout + bad.stderr

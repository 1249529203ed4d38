import subprocess
import sys
import time

import pytest

from speechkd.cli import build_parser, main
from speechkd.utils.runinfo import write_run_info


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from speechkd.cli import build_parser\n"
        "build_parser().format_help()\n"
        "heavy = [m for m in ('torch', 'lhotse', 'transformers') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"--help imported {out.stdout.strip()}"


def test_help_is_fast_and_lists_groups():
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "speechkd", "--help"], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    assert out.returncode == 0
    assert "data" in out.stdout and "asr" in out.stdout
    # generous bound (shared CI machine); the real figure is ~0.1 s
    assert elapsed < 5, elapsed


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2


def test_write_run_info(tmp_path):
    write_run_info(tmp_path, {"a": 1}, ["speechkd", "asr", "train"])
    write_run_info(tmp_path, {"a": 2}, ["speechkd", "asr", "train", "--resume"])
    assert "a: 2" in (tmp_path / "config.yaml").read_text()
    cmds = (tmp_path / "command.sh").read_text()
    assert "speechkd asr train\n" in cmds and "speechkd asr train --resume\n" in cmds
    versions = (tmp_path / "versions.yaml").read_text()
    assert "torch:" in versions and "lhotse:" in versions


def test_unrecognized_arguments_print_the_commands_usage(capsys):
    """They used to print the top-level usage (`speechkd [-h] [--version] <group> ...`) only."""
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "make-minilibri", "--output-dir", "x", "--bogus", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: speechkd data make-minilibri" in err and "--train-minutes" in err
    assert "speechkd data make-minilibri: error: unrecognized arguments: --bogus 1" in err


@pytest.mark.parametrize(
    "args, tiny", [([], False), (["--tiny"], True), (["--tiny", "true"], True), (["--tiny=false"], False)]
)
def test_tiny_takes_the_run_sh_form_too(args, tiny):
    """`--tiny true` (run.sh's form) used to be an 'unrecognized arguments: true' error on the CLI."""
    parsed = build_parser().parse_args(["data", "make-minilibri", "--output-dir", "x", *args])
    assert parsed.tiny is tiny


def test_tiny_with_another_word_is_an_error(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["data", "make-minilibri", "--output-dir", "x", "--tiny", "yes"])
    assert "use true or false, not 'yes'" in capsys.readouterr().err

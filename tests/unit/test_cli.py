import subprocess
import sys
import time

from speechkd.cli import main
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

from dataclasses import dataclass, field
from typing import Optional

import pytest
import yaml

from speechkd.config import load_config, save_config, to_dict
from speechkd.errors import SpeechkdError


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)


@dataclass
class Cfg:
    optim: Optim = field(default_factory=Optim)
    num_epochs: int = 10
    name: str = "x"
    chunks: list[int] = field(default_factory=lambda: [16, -1])
    note: Optional[str] = None


def test_defaults_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 5e-4\nnum_epochs: 3\n")
    cfg = load_config(Cfg, p, ["optim.betas=[0.8, 0.9]", "chunks=[8]", "name=abc", "note=hi"])
    assert cfg.optim.lr == pytest.approx(5e-4)
    assert isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.num_epochs == 3 and cfg.chunks == [8] and cfg.name == "abc" and cfg.note == "hi"


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lrr: 1\n")
    with pytest.raises(SpeechkdError, match="optim.lrr"):
        load_config(Cfg, p)
    with pytest.raises(SpeechkdError, match="num_epoch"):
        load_config(Cfg, None, ["num_epoch=2"])


def test_wrong_type_is_named():
    with pytest.raises(SpeechkdError, match="num_epochs"):
        load_config(Cfg, None, ["num_epochs=abc"])
    with pytest.raises(SpeechkdError, match="num_epochs"):
        load_config(Cfg, None, ["num_epochs=true"])


def test_missing_file_and_roundtrip(tmp_path):
    with pytest.raises(SpeechkdError, match="not found"):
        load_config(Cfg, tmp_path / "nope.yaml")
    cfg = load_config(Cfg, None, ["optim.lr=0.1"])
    save_config(cfg, tmp_path / "out.yaml")
    data = yaml.safe_load((tmp_path / "out.yaml").read_text())
    assert data == to_dict(cfg)
    assert load_config(Cfg, tmp_path / "out.yaml") == cfg


def test_data_config_rejects_one_bucket():
    from speechkd.data.datamodule import DataConfig

    with pytest.raises(SpeechkdError, match="num_buckets >= 2"):
        load_config(DataConfig, None, ["num_buckets=1"])
    assert load_config(DataConfig, None, ["num_buckets=2"]).num_buckets == 2


def test_read_experiment_config_splits_paths_and_ignored_keys(tmp_path):
    from speechkd.config import read_experiment_config

    with pytest.raises(SpeechkdError, match=r"config.yaml not found: .*`speechkd asr train` experiment dir"):
        read_experiment_config(tmp_path, Cfg, "speechkd asr train")
    (tmp_path / "config.yaml").write_text(
        "num_epochs: 3\npaths: {cuts_dir: data/fbank}\nteacher_description: {layers: [2, 4]}\n")
    with pytest.raises(SpeechkdError, match="teacher_description"):  # not a field of Cfg unless ignored
        read_experiment_config(tmp_path, Cfg, "x")
    cfg, paths = read_experiment_config(tmp_path, Cfg, "x", ignore=("teacher_description",))
    assert cfg.num_epochs == 3 and paths == {"cuts_dir": "data/fbank"}


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_config_is_its_bases_with_its_own_keys_merged_over_them(tmp_path):
    from speechkd.config import config_files, load_yaml

    _write(tmp_path / "base" / "a.yaml", "optim:\n  lr: 1.0e-2\n  betas: [0.1, 0.2]\nnum_epochs: 5\nchunks: [1, 2, 3]\n")
    _write(tmp_path / "base" / "b.yaml", "_base_: a.yaml\noptim:\n  lr: 2.0e-2\nname: b\n")  # relative to b.yaml
    _write(tmp_path / "other.yaml", "num_epochs: 7\nnote: other\n")
    child = _write(tmp_path / "c.yaml", "_base_: [base/b.yaml, other.yaml]\noptim:\n  betas: [0.5, 0.6]\nchunks: [9]\n")
    assert load_yaml(child) == {
        "optim": {"lr": 2.0e-2, "betas": [0.5, 0.6]},  # mappings merge key by key: lr from b, betas from c
        "num_epochs": 7,  # the later base wins over the earlier one
        "chunks": [9],  # a list replaces the base's list, it is not appended to
        "name": "b",
        "note": "other",
    }
    assert config_files(child) == [tmp_path / "base" / "a.yaml", tmp_path / "base" / "b.yaml",
                                   tmp_path / "other.yaml", child]
    cfg = load_config(Cfg, child, ["optim.lr=3e-2"])  # overrides still come last
    assert (cfg.optim.lr, cfg.optim.betas, cfg.num_epochs, cfg.chunks) == (3e-2, (0.5, 0.6), 7, [9])
    save_config(cfg, tmp_path / "exp" / "config.yaml")
    assert "_base_" not in (tmp_path / "exp" / "config.yaml").read_text()  # the exp dir keeps the resolved config


def test_bad_bases_are_errors_that_name_the_files(tmp_path):
    from speechkd.config import load_yaml

    missing = _write(tmp_path / "m.yaml", "_base_: nowhere.yaml\n")
    with pytest.raises(SpeechkdError, match=r"m\.yaml: _base_ file not found: .*nowhere\.yaml"):
        load_yaml(missing)
    _write(tmp_path / "x.yaml", "_base_: y.yaml\nnum_epochs: 1\n")
    _write(tmp_path / "y.yaml", "_base_: x.yaml\n")
    with pytest.raises(SpeechkdError, match=r"in a loop: .*x\.yaml -> .*y\.yaml -> .*x\.yaml"):
        load_yaml(tmp_path / "x.yaml")
    selfish = _write(tmp_path / "s.yaml", "_base_: s.yaml\n")
    with pytest.raises(SpeechkdError, match="in a loop"):
        load_yaml(selfish)
    for bad in ("3", "[]", "{a: 1}", "['']"):
        with pytest.raises(SpeechkdError, match=r"_base_ must be a file name or a list of them"):
            load_yaml(_write(tmp_path / "bad.yaml", f"_base_: {bad}\n"))
    # a diamond is not a loop: both branches may start from the same file
    _write(tmp_path / "d0.yaml", "num_epochs: 1\n")
    _write(tmp_path / "d1.yaml", "_base_: d0.yaml\nname: one\n")
    _write(tmp_path / "d2.yaml", "_base_: d0.yaml\nnote: two\n")
    assert load_yaml(_write(tmp_path / "d.yaml", "_base_: [d1.yaml, d2.yaml]\n")) == \
        {"num_epochs": 1, "name": "one", "note": "two"}


def test_config_show_prints_the_merged_config_a_key_or_the_files(tmp_path, capsys):
    from speechkd.cli import main

    _write(tmp_path / "a.yaml", "loss:\n  mode: stored\n  weight: 1\ntrainer:\n  num_epochs: 3\n")
    child = _write(tmp_path / "b.yaml", "_base_: a.yaml\nloss:\n  weight: 2\n")
    assert main(["config", "show", str(child), "--set", "trainer.num_epochs=4"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"loss": {"mode": "stored", "weight": 2},
                                                       "trainer": {"num_epochs": 4}}
    assert main(["config", "show", str(child), "--key", "loss.mode"]) == 0
    assert capsys.readouterr().out == "stored\n"
    assert main(["config", "show", str(child), "--key", "loss.missing"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["config", "show", str(child), "--set", "loss.flag=true", "--key", "loss.flag"]) == 0
    assert capsys.readouterr().out == "true\n"
    assert main(["config", "show", str(child), "--key", "loss.absent"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["config", "show", str(child), "--files"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "a.yaml"), str(child)]
    assert main(["config", "show", str(tmp_path / "none.yaml")]) != 0
    assert "config file not found" in capsys.readouterr().err

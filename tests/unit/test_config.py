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

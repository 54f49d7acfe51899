"""finn_build config loader: bad values fail with a clear message naming the field."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from build_helpers import tiny_build_dict
from finn_build.boards import BOARDS, get_board
from finn_build.config import BuildConfigError, config_from_dict, load_build_config

ROOT = Path(__file__).resolve().parents[1]


def _qonnx(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_bytes(b"x")
    (tmp_path / "model.meta.json").write_text("{}")
    return str(p)


@pytest.mark.parametrize("override, field, words", [
    ({"clock_mhz": -5}, "clock_mhz", "(0, 1000]"),
    ({"clock_mhz": "fast"}, "clock_mhz", "expected a number"),
    ({"board": "Pynq-Z3"}, "board", "known boards"),
    ({"folding": {"target_fps": "fast"}}, "folding.target_fps", "\"max\""),
    ({"folding": {"target_fps": -1}}, "folding.target_fps", "positive"),
    ({"folding": {"max_utilization": {"dsp": 1.5}}}, "folding.max_utilization.dsp", "(0, 1]"),
    ({"verify": {"images_per_task": 0}}, "verify.images_per_task", "1..10000"),
    ({"verify": {"split": "dev"}}, "verify.split", "not one of"),
    ({"allow_hls": "no"}, "allow_hls", "true/false"),
    ({"boards": "Pynq-Z1"}, "<top level>", "unknown key(s) ['boards']"),
    ({"folding": {"file": "nope.json"}}, "folding.file", "file not found"),
    ({"fifo_depths": "deep"}, "fifo_depths", "minimal"),
])
def test_bad_values_name_the_field(tmp_path, override, field, words):
    raw = {"name": "t", "model": {"qonnx": _qonnx(tmp_path)}}
    raw.update(override)
    with pytest.raises(BuildConfigError) as ei:
        config_from_dict(raw, "cfg.yaml")
    msg = str(ei.value)
    assert msg.startswith(f"cfg.yaml: {field}:"), msg
    assert words in msg, msg


def test_model_source_exactly_one(tmp_path):
    with pytest.raises(BuildConfigError, match="model: give exactly one of"):
        config_from_dict({"model": {}})
    q = _qonnx(tmp_path)
    with pytest.raises(BuildConfigError, match="model: give exactly one of"):
        config_from_dict({"model": {"qonnx": q, "checkpoint": q}})
    with pytest.raises(BuildConfigError, match="model.qonnx: file not found"):
        config_from_dict({"model": {"qonnx": str(tmp_path / "missing.onnx")}})


def test_good_config_and_derived_values(tmp_path):
    cfg = config_from_dict({"name": "t", "model": {"qonnx": _qonnx(tmp_path)},
                            "board": "pynq-z2", "clock_mhz": 125,
                            "folding": {"target_fps": 25000}})
    assert cfg.board == "Pynq-Z2" and cfg.fpga_part == "xc7z020clg400-1"
    assert cfg.target_cycles == 5000
    assert cfg.verify.images_per_task == 32 and cfg.allow_hls is False


def test_board_table():
    assert {"Pynq-Z1", "Pynq-Z2", "ZCU104", "KV260"} <= set(BOARDS)
    z1 = get_board("Pynq-Z1")
    assert (z1.part, z1.lut, z1.bram18, z1.dsp) == ("xc7z020clg400-1", 53200, 280, 220)
    assert get_board("kv260").part.startswith("xck26")


def test_repo_build_configs_are_valid():
    for p in sorted((ROOT / "build_configs").glob("*.yaml")):
        cfg = load_build_config(p)
        assert cfg.name == yaml.safe_load(p.read_text()).get("name", p.stem)


def test_cli_bad_config_exit_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"qonnx": _qonnx(tmp_path)}, "clock_mhz": 0}))
    r = subprocess.run([sys.executable, "-m", "finn_build", "--config", str(bad)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1, r.stderr
    assert "clock_mhz" in r.stderr


def _untrained(tmp_path, model, **over):
    raw = tiny_build_dict(tmp_path)  # its model section is replaced by the one under test
    raw["model"]["untrained"]["model"] = model
    raw["model"]["untrained"].update(over)
    return raw


@pytest.mark.parametrize("model, over, words", [
    ({"arch": "mlp", "convs": [[8, 3, 2, 1]]}, {},
     "model.untrained.model.convs: a field of arch cnn, not of arch mlp"),
    ({"arch": "cnn", "in_channels": 3, "convs": [[8, 3, 2, 1]]}, {},
     "model.untrained.model.convs: the last conv must leave a 1x1 feature map"),
    ({"arch": "cnn", "in_channels": 3, "convs": [[8, 3, 2, 1], [8, 3, 2, 1], [16, 3, 2, 0],
                                                  [16, 3, 1, 0]]}, {"input_size": 64},
     "model.untrained.model.convs: the last conv must leave a 1x1 feature map"),
    ({"arch": "vit"}, {},
     "model.untrained.model.arch: 'vit' is not one of ['mlp', 'cnn', 'mobilenetv2_lite']"),
    ({"w_bits": 9}, {}, "model.untrained.model.w_bits: 9 is outside 1..8"),
    ({}, {}, "model.untrained.model: needs a model section"),
])
def test_untrained_model_section_is_checked_per_arch(tmp_path, model, over, words):
    with pytest.raises(BuildConfigError) as e:
        config_from_dict(_untrained(tmp_path, model, **over), "cfg.yaml")
    assert str(e.value).startswith(f"cfg.yaml: {words}"), str(e.value)


def test_to_dict_keeps_the_untrained_model_as_written(tmp_path):
    # a build's resume records compare to_dict(): defaults must not appear in it
    convs = [[8, 3, 2, 1], [8, 3, 2, 1], [16, 3, 2, 0], [16, 3, 1, 0]]
    raw = _untrained(tmp_path, {"arch": "cnn", "in_channels": 3, "convs": convs})
    cfg = config_from_dict(raw, "cfg.yaml")
    assert cfg.to_dict()["model"]["untrained"]["model"] == raw["model"]["untrained"]["model"]
    assert cfg.model.untrained.model.head_hidden == 16  # the default, on the object
    assert config_from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_loader_fields_and_derived_values(tmp_path):
    p = ROOT / "build_configs" / "mlp_w4a4_pynqz1.yaml"
    cfg = load_build_config(p)
    assert cfg.source_file == str(p) and "source_file" not in cfg.to_dict()
    assert vars(cfg.folding.max_utilization) == {"lut": 0.85, "bram18": 0.9, "dsp": 0.95,
                                                 "uram": 0.9}
    assert (cfg.clk_period_ns, cfg.target_cycles) == (10.0, 200)
    assert cfg.out_dir == Path("build/finn/mlp_w4a4_pynqz1")
    assert isinstance(cfg.clock_mhz, float) and cfg.to_dict()["clock_mhz"] == 100.0
    with pytest.raises(BuildConfigError, match=r"unknown key\(s\) \['source_file'\]"):
        config_from_dict({**cfg.to_dict(), "source_file": "x.yaml"})

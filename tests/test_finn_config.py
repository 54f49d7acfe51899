"""finn_build config loader: bad values fail with a clear message naming the field."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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

"""finn_build end to end with real finn-plus (no mocks): tiny models through the whole
pipeline, all-RTL, all-output verification, corruption detection, non-RTL rejection."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finn_build.config import config_from_dict
from finn_build.pipeline import run_build
from finn_build.errors import NotAllRTLError
from build_helpers import export_pool_model, flip_weight_step, tiny_build_dict
from finn_build.errors import VerificationError

ROOT = Path(__file__).resolve().parents[1]
RTL_TYPES = {"MVAU_rtl", "Thresholding_rtl", "ConvolutionInputGenerator_rtl", "FMPadding_rtl",
             "StreamingDataWidthConverter_rtl", "StreamingFIFO_rtl"}
ALL_STAGES = ["load_model_brevitas", "load_model", "qonnx_to_finn", "tidy_up", "streamline",
              "minimize_datatypes", "insert_dwc_fifo"]


def _quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def tiny_mlp(tmp_path_factory):
    out = tmp_path_factory.mktemp("finn_mlp")
    cfg = config_from_dict(tiny_build_dict(out, "mlp"))
    rep = run_build(cfg, echo=_quiet)
    return cfg, rep


def test_tiny_mlp_all_rtl_and_verified(tiny_mlp):
    cfg, rep = tiny_mlp
    out = Path(cfg.out_dir)
    assert rep["status"] == "ok" and rep["all_rtl"] and not rep["non_rtl_nodes"]
    df = [n for n in rep["nodes"] if n["backend"] != "none"]
    assert df and {n["op_type"] for n in df} <= RTL_TYPES
    ver = json.loads((out / "verification.json").read_text())
    assert ver["status"] == "pass" and ver["verified_stages"] == ALL_STAGES
    assert ver["mismatches"] == 0 and ver["n_images"] == 12
    # all outputs compared, integer stages exact
    for st in ver["stages"]:
        assert st["n_outputs"] == 12
        if st["stage"] in ("streamline", "minimize_datatypes", "insert_dwc_fifo"):
            assert st["kind"] == "integer" and st["max_abs_acc_diff"] == 0
    # host ops: exact per-class scale/bias behind the partition, layout op in front
    host = json.loads((out / "host_ops.json").read_text())
    assert [o["op"] for o in host["post"]] == ["mul", "add"]
    assert host["pre"] in ([{"op": "reshape", "shape": [1, 784]}],
                           [{"op": "flatten", "axis": 1}])
    assert host["dataflow_input"]["dtype"] == "UINT8"
    e = rep["estimates"]
    assert e["est_fps"] > 0 and e["fits"] and e["est_dsp"] <= 220
    # an MLP does one MAC per weight per image: MACs/image = the MVAUs' weights
    import onnx
    from onnx import numpy_helper

    m = onnx.load(next((out / "intermediate").glob("*_estimates.onnx")))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    weights = sum(inits[n.input[1]].size for n in m.graph.node if n.op_type.startswith("MVAU"))
    assert e["macs_per_image"] == weights > 0
    assert e["est_macs_per_cycle"] == pytest.approx(weights / e["max_cycles"], abs=0.1)
    for name in rep["step_times"]:
        assert any(a.endswith(f"_{name}.onnx") for a in rep["artifacts"]), name
    assert (out / "report" / "folding_config.json").exists()
    assert rep["provenance"]["model_files"] and rep["provenance"]["data_files"]


def test_resume_from_step_with_new_target(tiny_mlp):
    cfg, rep = tiny_mlp
    slow = config_from_dict({**cfg.to_dict(), "folding": {"target_fps": 20000}})
    rep2 = run_build(slow, from_step="set_folding", echo=_quiet)
    assert rep2["status"] == "ok" and rep2["all_rtl"]
    assert 20000 <= rep2["estimates"]["est_fps"] < rep["estimates"]["est_fps"]
    assert set(rep2["step_times"]) == set(rep["step_times"])
    assert rep2["verification"]["verified_stages"] == ALL_STAGES


@pytest.mark.parametrize("after, stage", [("convert_to_hw", "minimize_datatypes"),
                                          ("set_folding", "insert_dwc_fifo")])
def test_flipped_weight_fails_verification_naming_the_stage(tiny_mlp, tmp_path, after, stage):
    cfg, _ = tiny_mlp
    qonnx = Path(cfg.out_dir) / "model" / "model.onnx"
    d = tiny_build_dict(tmp_path, "mlp", model={"qonnx": str(qonnx)})
    d["model"].pop("untrained")
    bad = config_from_dict(d)
    with pytest.raises(VerificationError) as ei:
        run_build(bad, inject_after={after: [("corrupt_weight", flip_weight_step())]},
                  echo=_quiet)
    assert ei.value.stage == stage and f"stage '{stage}'" in str(ei.value)
    ver = json.loads((Path(bad.out_dir) / "verification.json").read_text())
    assert ver["status"] == "fail" and ver["failed_stages"] == [stage]
    rec = [s for s in ver["stages"] if s["stage"] == stage][0]
    assert rec["mismatch_images"] and rec["mismatch_outputs"] and rec["mismatch_tasks"]
    # the last layer's weight feeds exactly one output column
    assert len(rec["mismatch_outputs"]) == 1
    assert ver["verified_stages"][:2] == ["load_model", "qonnx_to_finn"]
    rep = json.loads((Path(bad.out_dir) / "build_report.json").read_text())
    assert rep["status"] == "failed" and rep["error_type"] == "VerificationError"


def test_float_stage_rounding_flip_at_a_quantizer_boundary_is_explained_a_defect_is_not(
        tiny_mlp, tmp_path):
    """A float32 stage that rounded one activation at a quantizer boundary the other way
    passes (and is recorded); the same logits with one output off by a single accumulator
    step (a defect no boundary flip reproduces) fail."""
    import shutil

    import numpy as np

    from finn_build import float64_ref
    from finn_build import host_ops
    from finn_build.verify import Verifier

    cfg, _ = tiny_mlp
    out = Path(cfg.out_dir)
    shutil.copytree(out / "verification", tmp_path / "v")
    state = json.loads((out / "state.json").read_text())
    host = state["streamlined_host_ops"]
    v = Verifier(tmp_path / "v", state["meta"])
    ref = v.reference_model_path
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(ref))
    ref_acc = np.load(tmp_path / "v" / "ref_acc.npz")["acc"]
    # image 0 with its activation nearest to a rounding boundary rounded the other way
    y0, near = float64_ref.run(model, v.inputs[:1])
    assert near and near[0][0] < float64_ref.NEAR
    y1, _ = float64_ref.run(model, v.inputs[:1], [near[0][1:]])
    acc1 = host_ops.invert_post(host, y1[None])[0]
    assert np.abs(acc1 - ref_acc[0]).max() >= 0.75  # the flip is visible in the integers
    logits = np.load(tmp_path / "v" / "stage_load_model.npz")["logits"].copy()
    logits[0] = y1.astype(np.float32)
    rec = v.check("load_model_brevitas", logits, None, host)
    assert rec["status"] == "pass" and rec["mismatches"] == 0
    (flip,) = rec["boundary_flip_images"]
    assert flip["index"] == 0 and flip["stage_flips"] == [[*near[0][1:], round(near[0][0], 6)]]
    # a defect: one output one accumulator step off, on image 1
    scale, _ = host_ops.affine_of(host, logits.shape[1])
    bad = np.load(tmp_path / "v" / "stage_load_model.npz")["logits"].copy()
    bad[1, 3] += np.float32(scale[3])
    with pytest.raises(VerificationError) as ei:
        v.check("load_model_brevitas", bad, None, host)
    assert ei.value.record["mismatch_images"] == [1]
    assert ei.value.record["mismatch_outputs"] == [3]


@pytest.fixture(scope="module")
def pool_qonnx(tmp_path_factory):
    return export_pool_model(tmp_path_factory.mktemp("pool") / "model")


def test_hls_only_layer_fails_with_offending_nodes(pool_qonnx, tmp_path):
    cfg = config_from_dict({"name": "pool", "model": {"qonnx": str(pool_qonnx)},
                            "verify": {"images_per_task": 2},
                            "output_dir": str(tmp_path / "pool")})
    with pytest.raises(NotAllRTLError) as ei:
        run_build(cfg, echo=_quiet)
    assert [o["op_type"] for o in ei.value.offending] == ["Pool_hls"]
    assert "Pool_hls_0" in str(ei.value) and "allow_hls=false" in str(ei.value)
    rep = json.loads((tmp_path / "pool" / "build_report.json").read_text())
    assert rep["failed_step"] == "specialize_layers"
    assert [n["op_type"] for n in rep["non_rtl_nodes"]] == ["Pool_hls"]


def test_cli_exit_code_for_hls_node(pool_qonnx, tmp_path):
    y = tmp_path / "pool.yaml"
    y.write_text(yaml.safe_dump({"name": "pool_cli", "model": {"qonnx": str(pool_qonnx)},
                                 "verify": {"enabled": False},
                                 "output_dir": str(tmp_path / "pool_cli")}))
    r = subprocess.run([sys.executable, "-m", "finn_build", "--config", str(y)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 4, r.stderr[-2000:]
    assert "Pool_hls" in r.stderr


def test_tiny_cnn_all_rtl(tmp_path):
    cfg = config_from_dict(tiny_build_dict(tmp_path, "cnn",
                                           folding={"target_fps": 20000}))
    rep = run_build(cfg, echo=_quiet)
    ops = {n["op_type"] for n in rep["nodes"] if n["backend"] != "none"}
    assert {"ConvolutionInputGenerator_rtl", "FMPadding_rtl", "MVAU_rtl"} <= ops <= RTL_TYPES
    assert rep["verification"]["verified_stages"] == ALL_STAGES
    assert rep["estimates"]["est_fps"] >= 20000
    host = rep["host_ops"]
    assert host["pre"] == [{"op": "transpose", "perm": [0, 2, 3, 1]}]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp_w4a4_pynqz1", "cnn_w4a4_pynqz1"])
def test_repo_build_configs(name, tmp_path):
    from finn_build.config import load_build_config

    cfg = load_build_config(ROOT / "build_configs" / f"{name}.yaml",
                            {"output_dir": str(tmp_path / name)})
    rep = run_build(cfg, echo=_quiet)
    assert rep["all_rtl"] and rep["verification"]["status"] == "pass"
    assert rep["verification"]["mismatches"] == 0
    # (build time is a benchmark figure, bench-hardware's build_seconds, not a test bound: this
    # one asserted < 180 s and failed beside other jobs at 317 / 480 s)

"""A residual MobileNet-v2-style block (``tests/residual_helpers.py``: stem conv, fork,
1x1 expand, 3x3 depthwise, 1x1 linear project, integer add with the skip, requant, global
average pool, fused multi-task heads) from Brevitas through the whole build to an all-RTL
dataflow partition on Pynq-Z1, with real finn-plus and Verilator (no mocks):

- streamlining for branches (``transforms.StreamlineBranches``), the fork as
  ``DuplicateStreams_rtl``, the add as ``AddStreams_rtl``, the pool as ``GlobalAccPool_rtl``
  (its 1/(H*W) absorbed into the next thresholds), the depthwise conv as our ``VVAU_rtl``
  fed by FINN's depthwise sliding window (SIMD = the VVAU's PE);
- ONE dataflow partition for the branching graph (FINN issue #955 concerns);
- every stage verified on every output of every task (FINN issue #865: not only the
  first), the Brevitas module against the QONNX integer-exactly, the folded partition with
  FIFOs and width converters between the sliding window and a VVAU with PE < Channels
  (FINN's python golden misreads that; ``layers.vvau.golden_vvau_inputs``);
- FIFOs sized by simulation, the stitched RTL bit-exact with and without random stalls.

Compiles use ``-O0`` and a cache private to the module."""
import json
from pathlib import Path

import numpy as np
import pytest

from finn_build.config import config_from_dict
from finn_build.pipeline import run_build
from residual_helpers import export_residual_model

RTL_TYPES = {"MVAU_rtl", "Thresholding_rtl", "ConvolutionInputGenerator_rtl", "FMPadding_rtl",
             "StreamingDataWidthConverter_rtl", "StreamingFIFO_rtl", "VVAU_rtl",
             "DuplicateStreams_rtl", "AddStreams_rtl", "GlobalAccPool_rtl"}
STAGES = ["load_model", "qonnx_to_finn", "tidy_up", "streamline", "minimize_datatypes",
          "insert_dwc_fifo", "rtlsim"]


def _quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def resblock(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("resblock_cache")
    mp.setenv("FINN_BUILD_RTLSIM_OPT", "-O0")
    mp.setenv("FINN_BUILD_RTLSIM_CACHE", str(cache))
    d = tmp_path_factory.mktemp("resblock")
    qonnx, model = export_residual_model(d / "model")
    # 20k FPS: the depthwise layer folds to PE=2 < 16 channels (the FIFO / golden case)
    cfg = config_from_dict({
        "name": "resblock", "model": {"qonnx": str(qonnx)}, "board": "Pynq-Z1",
        "clock_mhz": 100, "folding": {"target_fps": 20000},
        "verify": {"images_per_task": 4, "split": "test"},
        "rtlsim": {"enabled": True, "cache_dir": str(cache), "stall": 0.25},
        "output_dir": str(d / "build")})
    rep = run_build(cfg, echo=_quiet)
    yield cfg, rep, model, qonnx
    mp.undo()


def test_residual_block_all_rtl_every_stage_every_output(resblock):
    cfg, rep, _, _ = resblock
    out = Path(cfg.out_dir)
    assert rep["status"] == "ok" and rep["all_rtl"] and not rep["non_rtl_nodes"]
    types = {n["op_type"] for n in rep["nodes"]}
    assert {"DuplicateStreams_rtl", "AddStreams_rtl", "GlobalAccPool_rtl", "VVAU_rtl",
            "ConvolutionInputGenerator_rtl", "FMPadding_rtl"} <= types <= RTL_TYPES
    ver = json.loads((out / "verification.json").read_text())
    assert ver["status"] == "pass" and ver["verified_stages"] == STAGES
    assert ver["mismatches"] == 0 and ver["n_images"] == 12
    for st in ver["stages"]:
        if st["stage"] == "load_model_brevitas":  # a QONNX source: checked below instead
            assert st["status"] == "skipped"
            continue
        assert st["status"] == "pass" and st["n_outputs"] == 12, st["stage"]
        if st["stage"] in STAGES[3:]:
            assert st["kind"] == "integer" and st["max_abs_acc_diff"] == 0, st["stage"]
    rec = [s for s in ver["stages"] if s["stage"] == "rtlsim"][0]
    assert len(rec["runs"]) == 2 and rec["runs"][1]["stall"] > 0
    assert all(r["status"] == "pass" for r in rec["runs"])
    # one partition, fed and read by host ops only
    host = json.loads((out / "host_ops.json").read_text())
    assert host["pre"] == [{"op": "transpose", "perm": [0, 2, 3, 1]}]
    assert [o["op"] for o in host["post"]] == ["mul", "add"]
    assert rep["fifo_depths"]["method"] == "simulate"


def test_depthwise_folded_below_channels_with_matching_sliding_window(resblock):
    """The folding search folds the VVAU with its depthwise sliding window (window SIMD =
    VVAU PE), here PE < Channels, so the verified insert_dwc_fifo stage had FIFOs between
    the two (FINN's python golden alone gets this wrong)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    cfg, rep, _, _ = resblock
    m = ModelWrapper(str(Path(cfg.out_dir) / "intermediate" / "09_insert_dwc_fifo.onnx"))
    (vv,) = m.get_nodes_by_op_type("VVAU_rtl")
    v = getCustomOp(vv)
    assert v.get_nodeattr("PE") < v.get_nodeattr("Channels")
    prod = m.find_producer(vv.input[0])
    assert prod.op_type.startswith("StreamingFIFO")
    while not prod.op_type.startswith("ConvolutionInputGenerator"):
        prod = m.find_producer(prod.input[0])
    assert getCustomOp(prod).get_nodeattr("SIMD") == v.get_nodeattr("PE")
    assert getCustomOp(prod).get_nodeattr("depthwise") == 1
    # every candidate of the search names the window's matching folding
    cands = json.loads((Path(cfg.out_dir) / "report" / "folding_candidates.json").read_text())
    assert prod.name not in cands  # folded with the VVAU, not alone
    for c in cands[vv.name]:
        w = c["with"][prod.name]
        assert w["SIMD"] == c["attrs"]["PE"]
        assert w["parallel_window"] == int(c["attrs"]["SIMD"] > 1)
    assert {"DuplicateStreams_rtl_0", "AddStreams_rtl_0", "GlobalAccPool_rtl_0"} <= set(cands)


def test_brevitas_module_equals_the_qonnx_on_the_verification_images(resblock):
    """The QONNX source has no Brevitas stage in the build: the export check of the
    project (integer accumulators exact, every output) on the build's verification images."""
    from brevitas_models.export import check_export

    cfg, _, model, qonnx = resblock
    x = np.load(Path(cfg.out_dir) / "verification" / "inputs.npz")["x"]
    r = check_export(model, qonnx, x.transpose(0, 2, 3, 1))
    assert r["integer_exact"] and r["mismatched_outputs"] == 0 and r["outputs"] == 12


def test_branch_streamlining_only_for_branching_graphs(resblock):
    from qonnx.core.modelwrapper import ModelWrapper

    from finn_build.transforms import has_branches

    cfg, rep, _, _ = resblock
    inter = Path(cfg.out_dir) / "intermediate"
    assert has_branches(ModelWrapper(str(inter / "02_tidy_up.onnx")))
    st = ModelWrapper(str(inter / "03_streamline.onnx"))
    ops = [n.op_type for n in st.graph.node]
    # integer add, integer global sum; no float op left between the host ops
    assert "GlobalAveragePool" not in ops and ops.count("Add") == 2  # residual + host bias
    assert ops.count("Mul") == 1 and ops[-2:] == ["Mul", "Add"]

"""The hardware-layer seam (finn_build/layers: one ``HWLayer`` declaration per FINN HW op
family): every family the build can produce is declared, the declarations reproduce what the
build did before the seam (inference order, rtlsim set, layout-only ops), and a layer module
added to the registry is picked up by inference, folding, estimates, the report and the RTL
simulation's support list with no other change."""
import inspect
import re
import sys
import types

import pytest
from onnx import TensorProto, helper

from finn_build.finn_env import ensure_finn_env

ensure_finn_env()

from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.transformation.base import Transformation  # noqa: E402
from qonnx.util.basic import qonnx_make_model  # noqa: E402

from finn_build import layers  # noqa: E402
from finn_build.layers import HWLayer, hw_layers, layer_of  # noqa: E402

HW = "finn.custom_op.fpgadataflow"
FPGAPART = "xc7z020clg400-1"

# step_convert_to_hw's inference before the seam (steps.py at 3cb9b3f), in order
TODAYS_ORDER = [
    "InferThresholdingLayer", "InferVectorVectorActivation",
    "InferQuantizedMatrixVectorActivation", "InferLabelSelectLayer", "InferFMPadding",
    "InferPool", "InferConvInpGen", "RemoveCNVtoFCFlatten", "InferConcatLayer",
    "InferElementwiseBinaryOperation", "ElementwiseAddToAddStreams",
    "InferGlobalAccPoolLayer", "InferDuplicateStreamsLayer", "AbsorbConsecutiveTransposes",
    "InferDataLayouts"]
# rtlsim.hdl.SUPPORTED before the seam
TODAYS_RTLSIM = ("MVAU_rtl", "Thresholding_rtl", "ConvolutionInputGenerator_rtl",
                 "FMPadding_rtl", "StreamingDataWidthConverter_rtl", "StreamingFIFO_rtl",
                 "DuplicateStreams_rtl", "AddStreams_rtl", "GlobalAccPool_rtl", "VVAU_rtl")


def _identity_model() -> ModelWrapper:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="id")], "g", [x], [y])
    return ModelWrapper(qonnx_make_model(g))


def _transforms_run_by_convert_to_hw(monkeypatch) -> list:
    from finn_build import steps

    ran, depth = [], [0]
    real = ModelWrapper.transform

    def record(self, t, *a, **kw):  # the step's own transforms, not those they run inside
        if depth[0] == 0:
            ran.append(type(t).__name__)
        depth[0] += 1
        try:
            return real(self, t, *a, **kw)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(ModelWrapper, "transform", record)
    steps.step_convert_to_hw(_identity_model(), None)
    return ran


def test_every_layer_declares_what_the_build_needs():
    from finn.custom_op.fpgadataflow import rtl

    decl = hw_layers()
    families = [d.family for d in decl]
    assert len(families) == len(set(families))
    orders = [d.infer_order for d in decl if d.infer]
    assert len(orders) == len(set(orders))  # no tie: the inference order is fully declared
    for d in decl:
        assert isinstance(d, HWLayer) and d.family
        assert bool(d.fold_space) == bool(d.fold_attrs), d.family
        if d.rtlsim:  # a simulated layer has an RTL class in FINN's registry (FINN's or ours)
            assert f"{d.family}_rtl" in rtl.custom_op, d.family
    assert layer_of("MVAU_rtl").family == "MVAU" and layer_of("MultiThreshold") is None
    assert layer_of("ElementwiseMul_hls").family == "Elementwise"


def test_convert_to_hw_runs_the_declared_inference_in_todays_order(monkeypatch):
    ran = _transforms_run_by_convert_to_hw(monkeypatch)
    assert ran[:len(TODAYS_ORDER)] == TODAYS_ORDER


def test_every_op_family_convert_to_hw_can_produce_is_declared():
    """The HW ops the declared inferences create (the ``make_node`` op types in their
    sources; finn-plus' elementwise ops by name, an f-string there) and the ones later steps
    insert (width converters, FIFOs) all have a declaration."""
    from finn.custom_op.fpgadataflow import custom_op as finn_hw_ops

    made = set()
    for d in hw_layers():
        for t in (d.infer(_identity_model()) if d.infer else []):
            src = inspect.getsource(sys.modules[type(t).__module__])
            made |= set(re.findall(r'make_node\(\s*"(\w+)"', src)) & set(finn_hw_ops)
    made |= {op for op in finn_hw_ops if op.startswith("Elementwise")}
    made |= {"StreamingDataWidthConverter", "StreamingFIFO"}
    assert {"MVAU", "VVAU", "Thresholding", "ConvolutionInputGenerator", "FMPadding",
            "AddStreams", "DuplicateStreams", "GlobalAccPool", "Pool", "LabelSelect",
            "StreamingConcat"} <= made
    assert sorted(op for op in made if layer_of(op) is None) == []


def test_rtlsim_support_is_the_registry_rtlsim_set():
    from finn_build.rtlsim.hdl import SUPPORTED

    assert SUPPORTED == tuple(f"{d.family}_rtl" for d in hw_layers() if d.rtlsim)
    assert SUPPORTED == TODAYS_RTLSIM


def test_transforms_read_layout_only_and_the_mvau_family():
    from finn_build.transforms import _is_mvau, _layout_only

    node = types.SimpleNamespace
    assert [op for op in ("ConvolutionInputGenerator_rtl", "FMPadding_rtl",
                          "StreamingDataWidthConverter_rtl", "StreamingFIFO_rtl",
                          "Thresholding_rtl", "MVAU_rtl", "AddStreams_rtl")
            if _layout_only(node(op_type=op))] == [
        "ConvolutionInputGenerator_rtl", "FMPadding_rtl", "StreamingDataWidthConverter_rtl",
        "StreamingFIFO_rtl"]
    assert [op for op in ("MVAU", "MVAU_rtl", "MVAU_hls", "MVAU_x", "VVAU_rtl")
            if _is_mvau(node(op_type=op))] == ["MVAU", "MVAU_rtl", "MVAU_hls"]


# ---------------------------------------------------------------- a new layer, one module

class _Marker(Transformation):
    def apply(self, model):
        return model, False


def _upsample_model() -> ModelWrapper:
    """One FINN HW op no module of ours declares: UpsampleNearestNeighbour 2x2 -> 4x4."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])
    n = helper.make_node("UpsampleNearestNeighbour", ["x"], ["y"], name="up", domain=HW,
                         backend="fpgadataflow", HI=2, WI=2, HO=4, WO=4, NumChannels=4,
                         SIMD=1, inputDataType="UINT4")
    m = ModelWrapper(qonnx_make_model(helper.make_graph([n], "g", [x], [y])))
    from qonnx.core.datatype import DataType

    m.set_tensor_datatype("x", DataType["UINT4"])
    return m


def _dummy_module():
    mod = types.ModuleType("finn_build.layers._seam_dummy")

    def fold_space(model, node, inst):
        return [({"SIMD": s}, {}) for s in layers.divisors(inst.get_nodeattr("NumChannels"))]

    def correct_estimate(model, node, inst, finn, dsp_block):
        return {**finn, "lut": finn["lut"] + 10 * inst.get_nodeattr("SIMD")}, ["lut: +10/SIMD"]

    mod.LAYERS = (HWLayer(
        family="UpsampleNearestNeighbour", infer=lambda model: [_Marker()], infer_order=105,
        fold_space=fold_space, fold_attrs=("SIMD",), correct_estimate=correct_estimate,
        rtlsim=True, report_columns=lambda inst: {"HO": inst.get_nodeattr("HO")}),)
    return mod


@pytest.fixture
def with_dummy_layer(monkeypatch):
    monkeypatch.setitem(sys.modules, "finn_build.layers._seam_dummy", _dummy_module())
    monkeypatch.setattr(layers, "LAYER_MODULES", layers.LAYER_MODULES + ("_seam_dummy",))


def _fold_est_report():
    from finn_build import folding, report
    from finn_build.estimates import node_resources

    m = _upsample_model()
    cands = folding.enumerate_candidates(m, FPGAPART, "DSP48E1")
    res = node_resources(m, m.graph.node[0], FPGAPART, "DSP48E1")
    row = report.node_table(m, None)[0]
    return m, cands, res, row


def test_an_undeclared_op_is_neither_folded_nor_corrected():
    m, cands, res, row = _fold_est_report()
    assert cands == {}
    assert res["est"] == res["finn"] and res["notes"] == []
    assert "HO" not in row


def test_a_new_layer_module_is_picked_up_with_no_other_change(with_dummy_layer, monkeypatch):
    m, cands, res, row = _fold_est_report()
    # folding: its space, cycles from FINN's model (16 output pixels x 4/SIMD beats), its
    # corrected resources; SIMD restored afterwards
    got = sorted((c.attrs["SIMD"], c.cycles, c.res["lut"]) for c in cands["up"])
    assert got == [(1, 64, 10.0), (2, 32, 20.0), (4, 16, 40.0)]
    from qonnx.custom_op.registry import getCustomOp

    assert getCustomOp(m.graph.node[0]).get_nodeattr("SIMD") == 1
    # estimates: FINN's numbers kept, the correction and its note added
    assert res["est"]["lut"] == res["finn"]["lut"] + 10 and res["notes"] == ["lut: +10/SIMD"]
    # report and rtlsim support list
    assert row["HO"] == 4
    from finn_build.rtlsim.hdl import SUPPORTED

    assert SUPPORTED[-1] == "UpsampleNearestNeighbour_rtl"
    # inference: run in its declared place (105: after GlobalAccPool, before the forks)
    ran = _transforms_run_by_convert_to_hw(monkeypatch)
    i = ran.index("_Marker")
    assert ran[i - 1] == "InferGlobalAccPoolLayer" and ran[i + 1] == "InferDuplicateStreamsLayer"
    assert ran[:i] + ran[i + 1:len(TODAYS_ORDER) + 1] == TODAYS_ORDER


def test_parallel_window_is_not_offered_for_a_1x1_output_map():
    """finn-plus' parallel-window generator fails (log2(0)) on a 1x1 output map: folding must
    not offer it there (the tiny CNN's last conv, 3x3 -> 1x1), but does elsewhere."""
    from qonnx.custom_op.registry import getCustomOp
    from onnx import helper

    from finn_build.finn_env import ensure_finn_env
    from finn_build.layers.swg import _fold_space

    ensure_finn_env()
    spaces = {}
    for name, ifm, ofm in (("one", 3, 1), ("many", 5, 3)):
        node = helper.make_node(
            "ConvolutionInputGenerator_rtl", ["x"], ["y"], name=name,
            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow",
            ConvKernelDim=[3, 3], IFMChannels=8, IFMDim=[ifm, ifm], OFMDim=[ofm, ofm],
            SIMD=1, Stride=[1, 1], Dilation=[1, 1], inputDataType="UINT4",
            outputDataType="UINT4", depthwise=0)
        spaces[name] = _fold_space(None, node, getCustomOp(node))
    assert all(a["parallel_window"] == 0 for a, _ in spaces["one"])
    assert ({"SIMD": 8, "parallel_window": 1}, {}) in spaces["many"]

"""The build steps, in order. Each step is ``fn(model, build) -> model`` (FINN builder
style; ``build`` is the ``pipeline.Build``: the validated config plus the build dir state).
The pipeline saves ``intermediate/NN_<step>.onnx`` after each step and times it.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.fold_constants import FoldConstants
from qonnx.transformation.general import (
    GiveReadableTensorNames,
    GiveUniqueNodeNames,
    RemoveStaticGraphInputs,
    RemoveUnusedTensors,
)
from qonnx.transformation.infer_data_layouts import InferDataLayouts
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes

from .finn_env import ensure_finn_env

ensure_finn_env()

from brevitas_models.export import FixUnsignedBinaryActExport  # noqa: E402
from brevitas_models.files import write_json_atomic, write_text_atomic  # noqa: E402

from . import estimates, folding  # noqa: E402
from .errors import BuildError, DoesNotFitError, NotAllRTLError  # noqa: E402
from .progress import phase  # noqa: E402
from .rtlsim.step import step_rtlsim, stream_inputs  # noqa: E402
from .transforms import (  # noqa: E402
    HW_DOMAIN,
    LowerToRTLDatatypes,
    StreamlineBranches,
    has_branches,
    hw_backend_table,
    non_rtl_nodes,
    split_host_ops,
)

log = logging.getLogger("finn_build")


# ------------------------------------------------------------------------------ helpers

def _verify_enabled(build) -> bool:
    return build.cfg.verify.enabled


def _onnx_stage(build, model, stage, acc_tensor=None, host=None):
    if not _verify_enabled(build):
        return
    t = time.time()
    logits, acc = build.verifier.run_onnx(model, acc_tensor)
    build.verifier.check(stage, logits, acc, host, time.time() - t)


def apply_all(model: ModelWrapper, transformations) -> ModelWrapper:
    for t in transformations:
        model = model.transform(t)
    return model


def names_shapes_types():
    """After a graph rewrite: unique node names, then tensor shapes and datatypes."""
    return [GiveUniqueNodeNames(), InferShapes(), InferDataTypes()]


def minimize_bit_widths():
    """finn-plus' weight/accumulator/threshold width minimization, datatypes re-inferred
    after each (thresholds are rounded to the tightened accumulator, which lets the weight
    width shrink once more)."""
    from finn.transformation.fpgadataflow.minimize_accumulator_width import (
        MinimizeAccumulatorWidth,
    )
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

    return [MinimizeWeightBitWidth(), MinimizeAccumulatorWidth(), InferDataTypes(),
            RoundAndClipThresholds(), InferDataTypes(), MinimizeWeightBitWidth(),
            InferDataTypes()]


def _lower_datatypes(model: ModelWrapper, build) -> ModelWrapper:
    narrow = build.cfg.board_info.dsp_block == "DSP48E1"
    t = LowerToRTLDatatypes(narrow_weights=narrow)
    try:
        model = model.transform(t)
    except ValueError as e:
        raise BuildError(f"no RTL lowering: {e}") from None
    model = model.transform(InferDataTypes())
    if t.changes:
        build.state.rtl_datatype_changes.extend(t.changes)
    return model


# ------------------------------------------------------------------------------ steps

def step_load_model(model, build):
    """Materialize the model source (checkpoint -> export, QONNX file, or untrained model)
    as QONNX; run the reference (QONNX) and Brevitas verification stages."""
    from .model_io import resolve_model

    bundle = resolve_model(build.cfg, build.out / "model")
    build.state.meta = bundle.meta
    build.state.model_source = bundle.source
    build.state.model_files = {str(bundle.qonnx_path): build.sha256(bundle.qonnx_path)}
    if build.cfg.model.checkpoint:
        build.state.model_files[build.cfg.model.checkpoint] = build.sha256(
            build.cfg.model.checkpoint)
    model = ModelWrapper(str(bundle.qonnx_path))
    fix = FixUnsignedBinaryActExport()
    model = model.transform(fix)
    if fix.fixed:
        build.state.export_fixups = {"FixUnsignedBinaryActExport": fix.fixed}
        log.warning("rewrote %d Relu->BipolarQuant (1-bit unsigned activation export defect)",
                    len(fix.fixed))
    build.init_verifier(reset=True)
    if _verify_enabled(build):
        build.verifier.prepare_inputs(build.cfg.verify, build.state.data_files)
        # qonnx' cleanup (shape inference, constant folding) does not change semantics and
        # gives the executor the tensor shapes a TorchScript export leaves out
        from qonnx.util.cleanup import cleanup_model

        reference = cleanup_model(model)
        reference.save(str(build.verifier.reference_model_path))
        _onnx_stage(build, reference, "load_model")
        if bundle.torch_model is not None:
            t = time.time()
            logits = build.verifier.run_torch(bundle.torch_model)
            build.verifier.check("load_model_brevitas", logits, seconds=time.time() - t)
        else:
            build.verifier.skip("load_model_brevitas",
                                "model given as QONNX file: no Brevitas module to run")
    return model


def step_qonnx_to_finn(model, build):
    """QONNX cleanup + ConvertQONNXtoFINN (Quant -> MultiThreshold / integer weights)."""
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from qonnx.util.cleanup import cleanup_model

    model = cleanup_model(model)
    model = model.transform(ConvertQONNXtoFINN())
    _onnx_stage(build, model, "qonnx_to_finn")
    return model


def step_tidy_up(model, build):
    """Shapes, constant folding (e.g. the folded task-embedding bias), names, datatypes."""
    model = apply_all(model, [InferShapes(), FoldConstants(), GiveUniqueNodeNames(),
                              GiveReadableTensorNames(), InferDataTypes(),
                              RemoveStaticGraphInputs()])
    _onnx_stage(build, model, "tidy_up")
    return model


def step_streamline(model, build):
    """finn-plus streamlining (scales/biases/BN into thresholds), convs lowered to
    Im2Col+MatMul in NHWC (depthwise convs: a MatMul with a sparse weight matrix, annotated);
    a graph with forks, residual adds or global pooling also gets ``StreamlineBranches``
    (``transforms.py``; the MLP / CNN graphs have none and never run it); then the host ops
    (layout in front, float scale/bias behind) and the integer accumulator tensor between
    them are identified."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    model = model.transform(Streamline())
    if model.get_nodes_by_op_type("Conv"):
        model = model.transform(LowerConvsToMatMul())
        model = model.transform(MakeMaxPoolNHWC())
        model = model.transform(absorb.AbsorbTransposeIntoMultiThreshold())
        model = model.transform(MakeMaxPoolNHWC())
        model = model.transform(absorb.AbsorbConsecutiveTransposes())
    model = model.transform(Streamline())
    if has_branches(model):  # forks / residual adds / global pooling (not the MLP / CNN)
        model = model.transform(StreamlineBranches())
        build.state.extra["streamline_branches"] = True
    model = model.transform(InferDataLayouts())
    model = model.transform(RemoveUnusedTensors())
    model = model.transform(GiveUniqueNodeNames())
    split = split_host_ops(model)
    acc = split["acc_tensor"]
    adt = model.get_tensor_datatype(acc)
    build.state.streamlined_host_ops = {"pre": split["pre"], "post": split["post"]}
    build.state.acc_tensor = acc
    if not adt.is_integer():
        log.warning("accumulator tensor %s is %s, not integer", acc, adt.name)
    if _verify_enabled(build):
        host = {"pre": split["pre"], "post": split["post"]}
        _onnx_stage(build, model, "streamline", acc, host)
        build.verifier.recheck_float_stages(host)
    return model


def step_convert_to_hw(model, build):
    """Lower to finn-plus HW layers with standalone thresholds (MVAU / VVAU without embedded
    activation + Thresholding), sliding windows, padding, stream forks (DuplicateStreams),
    residual adds (ElementwiseAdd -> our AddStreams), global pooling (GlobalAccPool); other
    HW-convertible ops too (pooling, label select, ...), which the all-RTL check then
    reports. Each layer's inference is its ``HWLayer.infer`` (finn_build/layers/), run in
    ``infer_order``."""
    from finn.transformation.move_reshape import RemoveCNVtoFCFlatten
    from finn.transformation.streamline.absorb import AbsorbConsecutiveTransposes

    from .layers import hw_layers

    passes = [(layer.infer_order, layer.infer) for layer in hw_layers() if layer.infer]
    # the conv -> FC flatten goes once the convs are HW layers, before concats and adds
    passes.append((75, lambda m: [RemoveCNVtoFCFlatten()]))
    for _, infer in sorted(passes, key=lambda p: p[0]):
        for t in infer(model):  # infer(model): a filter may depend on the graph so far
            model = model.transform(t)
    model = model.transform(AbsorbConsecutiveTransposes())
    model = model.transform(InferDataLayouts())
    return apply_all(model, names_shapes_types())


def step_minimize_datatypes(model, build):
    """Tighten weight/accumulator/threshold widths (finn-plus), then lower datatypes to
    what the RTL MVU accepts: narrow-range signed weights (checked on the actual weight
    values, widened by one bit where a weight hits the type minimum), bipolar weights as
    INT2, 1-bit activations as UINT2. Verifies the HW layers (python execution)."""
    model = apply_all(model, minimize_bit_widths())
    model = _lower_datatypes(model, build)
    _onnx_stage(build, model, "minimize_datatypes", build.state.acc_tensor,
                build.state.streamlined_host_ops)
    return model


def step_create_dataflow_partition(model, build):
    """Cut the graph into host ops + ONE dataflow partition; record the host ops with
    their exact values. Fails with the list of non-HW nodes if any sits in between."""
    from finn.transformation.fpgadataflow.create_dataflow_partition import (
        CreateDataflowPartition,
    )

    split = split_host_ops(model, stop_at=lambda n: n.domain.startswith(HW_DOMAIN))
    host_nodes = set(split["pre_nodes"]) | set(split["post_nodes"])
    unmapped = [{"name": n.name, "op_type": n.op_type, "backend": "none (not a HW layer)"}
                for n in model.graph.node
                if not n.domain.startswith(HW_DOMAIN) and n.name not in host_nodes]
    if unmapped:
        raise NotAllRTLError(
            "these nodes could not be mapped to hardware layers and are not host ops "
            "(layout ops in front, float scale/bias at the end):", unmapped)
    pdir = build.out / "intermediate" / "dataflow_partition"
    if pdir.exists():
        shutil.rmtree(pdir)
    parent = model.transform(CreateDataflowPartition(partition_model_dir=str(pdir)))
    sdps = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    if len(sdps) != 1:
        raise BuildError(f"expected ONE dataflow partition, got {len(sdps)}")
    sdp = sdps[0]
    parent_path = build.out / "intermediate" / "dataflow_parent.onnx"
    parent.save(str(parent_path))
    hs = split_host_ops(parent, stop_at=lambda n: n.op_type == "StreamingDataflowPartition")
    child = ModelWrapper(getCustomOp(sdp).get_nodeattr("model"))
    cin, cout = child.graph.input[0].name, child.graph.output[0].name
    host = {
        "pre": hs["pre"], "post": hs["post"],
        "dataflow_input": {"shape": child.get_tensor_shape(cin),
                           "dtype": child.get_tensor_datatype(cin).name},
        "dataflow_output": {"shape": child.get_tensor_shape(cout),
                            "dtype": child.get_tensor_datatype(cout).name},
        "model_input": {"shape": parent.get_tensor_shape(parent.graph.input[0].name),
                        "layout": "NCHW", "dtype": "UINT8 values as float32"},
        "note": "logits = post(dataflow(pre(x))); pre/post are applied by the host "
                "(finn_build.host_ops.apply_pre/apply_post); task slices in meta.tasks",
    }
    if set(hs["pre_nodes"]) | set(hs["post_nodes"]) != {n.name for n in parent.graph.node
                                                         if n.name != sdp.name}:
        raise BuildError("parent graph holds ops that are neither host ops nor the partition")
    build.state.host_ops = host
    build.state.parent_model = str(parent_path)
    write_json_atomic(build.out / "host_ops.json", host, indent=2)
    return child


def step_specialize_layers(model, build):
    """Specialize every HW layer to its RTL variant (preferred_impl_style=rtl); with
    allow_hls=false any layer that stays HLS fails the build, listing the nodes. VVAU
    (depthwise) nodes go to our VVAU_rtl first (``layers.vvau.SpecializeVVAU``): FINN's
    SpecializeLayers makes them HLS on every non-Versal part."""
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    from .layers.vvau import SpecializeVVAU

    for node in model.graph.node:
        if node.domain.startswith(HW_DOMAIN):
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    model = model.transform(SpecializeVVAU(build.cfg.fpga_part))
    model = model.transform(SpecializeLayers(build.cfg.fpga_part))
    model = apply_all(model, names_shapes_types())
    model = _lower_datatypes(model, build)
    _check_all_rtl(model, build, "after layer specialization")
    return model


def _check_all_rtl(model, build, when):
    build.state.backends = hw_backend_table(model)
    bad = non_rtl_nodes(model)
    if bad and not build.cfg.allow_hls:
        raise NotAllRTLError(
            f"{len(bad)} node(s) of the dataflow partition are not RTL {when} "
            f"(allow_hls=false, target {build.cfg.fpga_part}):", bad)
    if bad:
        log.warning("allow_hls=true: non-RTL nodes kept: %s", [b["name"] for b in bad])


def step_set_folding(model, build):
    """PE/SIMD/ram_style per layer: from folding.file, for folding.target_fps, or the
    fastest folding that fits the part ("max"). See finn_build.folding."""
    from finn.transformation.general import ApplyConfig

    cfg = build.cfg
    board = cfg.board_info
    rdir = build.report_dir
    info = {"mode": None}
    if cfg.folding.file:
        model = model.transform(ApplyConfig(cfg.folding.file))
        info["mode"] = f"file:{cfg.folding.file}"
    else:
        cands = folding.enumerate_candidates(model, board.part, board.dsp_block)
        (rdir / "folding_candidates.json").write_text(
            json.dumps(folding.candidates_report(cands), indent=1))
        target = cfg.target_cycles
        overhead, start, tries = dict.fromkeys(estimates.RES_KEYS, 0.0), None, []
        for _ in range(6):
            t, sel, ok, frac = folding.search(cands, board.budget(), cfg.folding.max_utilization,
                                        target, overhead, start)
            model = folding.apply_selection(model, sel)
            # DWCs/FIFOs depend on the folding: measure them on a trial copy
            full = _with_dwc_fifo(model, build)
            tot = estimates.model_resources(full, board.part, board.dsp_block)["total"]
            ok_full, frac_full = estimates.fits(tot, board.budget(), cfg.folding.max_utilization)
            tries.append({"cycles": t, "fits_compute_only": ok, "fits_with_dwc_fifo": ok_full,
                          "total": tot})
            if ok_full or target is not None or not ok:
                ok, frac = ok_full, frac_full
                break
            comp = folding.totals(sel)
            overhead = {k: max(0.0, tot[k] - comp[k]) for k in estimates.RES_KEYS}
            start = t + 1
        info.update({"mode": "target_fps" if target else "max_fits",
                     "target_cycles": target, "chosen_cycles": t, "fits": ok,
                     "utilization_of_allowed": frac, "tries": tries,
                     "estimated_fps": folding.cycles_to_fps(t, cfg.clock_mhz)})
        if not ok:
            msg = (f"folding for {'%g FPS' % cfg.folding.target_fps if target else 'max FPS'}"
                   f" does not fit {board.name} ({board.part}) within max_utilization "
                   f"{vars(cfg.folding.max_utilization)}: needs "
                   + ", ".join(f"{k} {v:.0%} of allowed" for k, v in frac.items()))
            build.state.folding = info
            raise DoesNotFitError(msg)
    build.state.folding = info
    return model


def _with_dwc_fifo(model, build):
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    model = model.transform(InsertDWC())
    model = model.transform(InsertFIFO(create_shallow_fifos=True))
    for node in model.graph.node:
        if node.op_type in ("StreamingDataWidthConverter", "StreamingFIFO"):
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    model = model.transform(SpecializeLayers(build.cfg.fpga_part))
    model = model.transform(GiveUniqueNodeNames())
    model = model.transform(GiveReadableTensorNames())
    return model


def step_insert_dwc_fifo(model, build):
    """Stream width converters and FIFOs between layers (both specialized to RTL, FIFOs
    minimal until ``set_fifo_depths``), bit widths re-minimized; final all-RTL
    check; verification of the folded dataflow partition (python execution of the
    despecialized RTL layers) + host ops against the references."""
    model = _with_dwc_fifo(model, build)
    model = apply_all(model, minimize_bit_widths())
    model = _lower_datatypes(model, build)
    model = apply_all(model, names_shapes_types())
    _check_all_rtl(model, build, "after DWC/FIFO insertion")
    folding.write_folding_config(model, build.report_dir / "folding_config.json")
    if _verify_enabled(build):
        from finn.util.verification import despecialize_model

        from .layers.vvau import golden_vvau_inputs

        t = time.time()
        # FINN's VVAU python execution misreads its input behind a FIFO / DWC (see
        # golden_vvau_inputs); the FIFOs / DWCs themselves are identities in python
        child = golden_vvau_inputs(despecialize_model(model))
        host = build.state.host_ops
        logits, acc = build.verifier.run_dataflow(child, host)
        build.verifier.check("insert_dwc_fifo", logits, acc, host, time.time() - t)
    return model


def _fifo_sizing_inputs(model, build):
    """The verification images as the partition sees them (8 per task: the steady state of
    a dataflow is reached after a few images), or random inputs of the input datatype when
    verification is off (the timing of these layers does not depend on the data)."""
    if build.verifier is not None and build.verifier.inputs is not None:
        return stream_inputs(model, build, min(8, build.cfg.verify.images_per_task))[1]
    iname = model.graph.input[0].name
    dt, shape = model.get_tensor_datatype(iname), model.get_tensor_shape(iname)
    rng = np.random.default_rng(0)
    return [rng.integers(dt.min(), dt.max() + 1, shape).astype(np.float32) for _ in range(8)]


def step_set_fifo_depths(model, build):
    """FIFO depths of the built hardware (``fifo_depths``): ``simulate`` (default, as FINN's
    builder does) sizes every FIFO by Verilator simulation with unbounded FIFOs
    (``rtlsim/fifo.py``), then simulates the design with those depths on the same images:
    its measured interval is what the built hardware does (``report/fifo_depths.json``,
    the build report next to the estimate); its outputs must equal the python golden. A
    JSON file sets the depths it names; ``minimal`` keeps depth-2 FIFOs (not measured, can
    be much slower than the estimate and deadlock a graph with branches)."""
    from .rtlsim.fifo import apply_depths, fifo_nodes, measure, size_fifos
    from .rtlsim.tools import MissingToolError

    cfg = build.cfg
    current = fifo_nodes(model)
    rec = {"method": cfg.fifo_depths, "fifos": len(current)}
    if cfg.fifo_depths == "minimal":
        rec["note"] = ("minimal FIFOs, not sized: the hardware may run slower than the "
                       "estimate (set fifo_depths: simulate)")
    elif cfg.fifo_depths != "simulate":
        depths = json.loads(Path(cfg.fifo_depths).read_text())
        unknown = sorted(set(depths) - set(current))
        if unknown:
            raise BuildError(
                f"fifo_depths file {cfg.fifo_depths} names FIFOs this build does not have: "
                f"{unknown[:5]} (it was written for another folding or model); use "
                "fifo_depths: simulate, or the report/fifo_depths.json of this build")
        apply_depths(model, depths)
        rec.update({"method": "file", "file": cfg.fifo_depths,
                    "not_in_file": sorted(set(current) - set(depths))})
    else:
        xs = _fifo_sizing_inputs(model, build)
        wd = build.out / "fifo_sizing"
        cache = cfg.rtlsim.cache_dir
        phases = rec["phase_seconds"] = {}
        try:
            with phase("FIFO sizing", f"Verilator simulation of {len(xs)} images with "
                       "unbounded FIFOs (compile, then run)", phases):
                sized = size_fifos(model, xs, wd, cache, cfg.fpga_part, cfg.clk_period_ns,
                                   estimates.performance(model, cfg.clock_mhz)["max_cycles"])
                apply_depths(model, sized["depths"])
            with phase("FIFO check", "the design with the sized FIFOs compiled and "
                       "simulated on the same images", phases):
                built = measure(model, xs, wd / "sized", cache, cfg.fpga_part,
                                cfg.clk_period_ns)
        except MissingToolError as e:
            raise BuildError(
                f"FIFO sizing by simulation needs Verilator: {e}. Fix: make install (it "
                "installs the pinned verilator), or set fifo_depths: minimal (FIFOs not "
                "sized: the hardware may be slower than estimated) or a depths JSON") from None
        outputs = built.pop("outputs")
        rec.update({k: sized[k] for k in ("interval_cycles", "pace_cycles", "depths",
                                          "previous_depths", "compile_seconds")})
        rec["interval_cycles_unbounded"] = rec.pop("interval_cycles")
        rec["images"] = len(xs)
        rec["built"] = {**built, "fps": cfg.clock_mhz * 1e6 / built["interval_cycles"]
                        if built["interval_cycles"] else None}
        from .rtlsim.flow import golden_context

        bad = [k for k, (g, o) in enumerate(zip(golden_context(model, xs), outputs))
               if any(not np.array_equal(np.asarray(g[t]).reshape(-1),
                                         np.asarray(o[t]).reshape(-1)) for t in o)]
        if bad:
            raise BuildError(f"set_fifo_depths: the design with sized FIFOs gives other "
                             f"outputs than the python golden on inputs {bad[:10]}")
    depths = fifo_nodes(model)
    write_text_atomic(build.report_dir / "fifo_depths.json", json.dumps(depths, indent=1))
    rec["depths_file"] = str(build.report_dir / "fifo_depths.json")
    rec["total_depth"] = int(sum(depths.values()))
    build.state.fifo_depths = rec
    folding.write_folding_config(model, build.report_dir / "folding_config.json")
    return model


def step_estimates(model, build):
    """finn-plus estimates (cycles per layer, FPS, latency, LUT/BRAM/DSP per layer) plus our
    corrections, totals against the part's budget; fails if it does not fit."""
    from finn.analysis.fpgadataflow.op_and_param_counts import op_and_param_counts

    cfg = build.cfg
    board = cfg.board_info
    rdir = build.report_dir
    perf = estimates.performance(model, cfg.clock_mhz)
    res = estimates.model_resources(model, board.part, board.dsp_block)
    ok, frac = estimates.fits(res["total"], board.budget(), cfg.folding.max_utilization)
    util_part = {k: (res["total"][k] / board.budget()[k] if board.budget()[k] else None)
                 for k in estimates.RES_KEYS}
    try:
        ops = model.analysis(op_and_param_counts)
    except Exception as e:  # pragma: no cover
        ops = {"error": str(e)}
    est = {"board": board.to_dict(), "clock_mhz": cfg.clock_mhz, "performance": perf,
           "resources": res, "fits": ok, "utilization_of_part": util_part,
           "utilization_of_allowed": frac,
           "max_utilization": vars(cfg.folding.max_utilization), "op_and_param_counts": ops}
    (rdir / "estimates.json").write_text(json.dumps(est, indent=2, default=float))
    (rdir / "estimate_layer_cycles.json").write_text(
        json.dumps(perf["cycles_per_layer"], indent=2))
    (rdir / "estimate_layer_resources.json").write_text(json.dumps(
        {**{n: r["finn"] for n, r in res["per_node"].items()}, "total": res["total_finn"]},
        indent=2))
    (rdir / "estimate_network_performance.json").write_text(json.dumps(
        {k: perf[k] for k in ("max_cycles", "bottleneck", "critical_path_cycles", "est_fps",
                              "est_latency_us", "clock_mhz")}, indent=2))
    build.state.estimates = {
        "est_fps": perf["est_fps"], "est_latency_us": perf["est_latency_us"],
        "max_cycles": perf["max_cycles"], "bottleneck": perf["bottleneck"],
        "est_lut": res["total"]["lut"], "est_bram18": res["total"]["bram18"],
        "est_dsp": res["total"]["dsp"], "est_uram": res["total"]["uram"],
        "finn_lut": res["total_finn"]["lut"], "finn_bram18": res["total_finn"]["bram18"],
        "finn_dsp": res["total_finn"]["dsp"], "fits": ok}
    # multiply-accumulates per image: FINN's op counts of the MVAU/VVAU nodes, all bit widths
    macs = int(sum(v for k, v in (ops.get("total") or {}).items() if k.startswith("op_mac")))
    if macs:
        build.state.estimates.update(macs_per_image=macs,
                                     est_macs_per_cycle=round(macs / perf["max_cycles"], 1))
    if not ok:
        raise DoesNotFitError(
            f"estimated resources do not fit {board.name} within max_utilization: "
            + ", ".join(f"{k} {res['total'][k]:.0f}/{board.budget()[k]} "
                        f"({frac[k]:.0%} of allowed)" for k in estimates.RES_KEYS if frac[k] > 1))
    return model


STEPS = [
    ("load_model", step_load_model),
    ("qonnx_to_finn", step_qonnx_to_finn),
    ("tidy_up", step_tidy_up),
    ("streamline", step_streamline),
    ("convert_to_hw", step_convert_to_hw),
    ("minimize_datatypes", step_minimize_datatypes),
    ("create_dataflow_partition", step_create_dataflow_partition),
    ("specialize_layers", step_specialize_layers),
    ("set_folding", step_set_folding),
    ("insert_dwc_fifo", step_insert_dwc_fifo),
    ("set_fifo_depths", step_set_fifo_depths),
    ("estimates", step_estimates),
    ("rtlsim", step_rtlsim),
]
STEP_NAMES = [n for n, _ in STEPS]

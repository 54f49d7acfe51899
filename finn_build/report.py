"""Build reports: build_report.json / build_report.md and verification.json."""
from __future__ import annotations

import json

from qonnx.custom_op.registry import getCustomOp

from brevitas_models.files import write_json_atomic, write_text_atomic

from .layers import layer_of
from .provenance import provenance
from .transforms import backend_of


def node_table(model, est: dict | None) -> list[dict]:
    rows = []
    per_node = (est or {}).get("resources", {}).get("per_node", {})
    cycles = (est or {}).get("performance", {}).get("cycles_per_layer", {})
    for n in model.graph.node:
        row = {"name": n.name, "op_type": n.op_type, "backend": backend_of(n)}
        try:
            inst = getCustomOp(n)
            types = inst.get_nodeattr_types()
            for a in ("PE", "SIMD", "parallel_window", "ram_style", "depth"):
                if a in types:
                    row[a] = inst.get_nodeattr(a)
            if backend_of(n) != "none":
                row["in_dtype"] = inst.get_input_datatype(0).name
                row["out_dtype"] = inst.get_output_datatype(0).name
                layer = layer_of(n.op_type)  # its own columns (MVAU: weights, matrix)
                if layer and layer.report_columns:
                    row.update(layer.report_columns(inst))
        except Exception:
            pass
        if n.name in cycles:
            row["cycles"] = cycles[n.name]
        if n.name in per_node:
            row["res"] = per_node[n.name]["est"]
            row["res_finn"] = per_node[n.name]["finn"]
            if per_node[n.name]["notes"]:
                row["res_notes"] = per_node[n.name]["notes"]
        rows.append(row)
    return rows


def _md(report: dict) -> str:
    L = [f"# FINN build `{report['name']}`", ""]
    L.append(f"- status: **{report['status']}**" + (
        f" (failed step `{report['failed_step']}`: {report['error']})"
        if report.get("failed_step") else ""))
    L.append(f"- board: {report['board']} ({report['fpga_part']}), clock {report['clock_mhz']} MHz")
    L.append(f"- all RTL: {report['all_rtl']}")
    v = report.get("verification", {})
    L.append(f"- verification: {v.get('status')} — stages {v.get('verified_stages')}, "
             f"{v.get('mismatches')} mismatches on {v.get('n_images')} images")
    e = report.get("estimates") or {}
    if e:
        L.append(f"- estimated: {e['est_fps']:.0f} FPS, latency {e['est_latency_us']:.2f} us, "
                 f"LUT {e['est_lut']:.0f}, BRAM18 {e['est_bram18']:.0f}, DSP {e['est_dsp']:.0f} "
                 f"(finn-plus uncorrected: LUT {e['finn_lut']:.0f}, DSP {e['finn_dsp']:.0f}); "
                 f"bottleneck {e['bottleneck']}" + (
                     f"; {e['macs_per_image']:,} MACs/image = {e['est_macs_per_cycle']} MAC/cycle"
                     if e.get("macs_per_image") else ""))
        L.append(f"- FIFOs: {e.get('fifo_depths')}; " + (
            f"measured (Verilator, FIFOs as built): {e['measured_fps']:.0f} FPS, "
            f"{e['measured_cycles_per_image']:.0f} cycles/image vs {e['max_cycles']} estimated"
            if e.get("measured_fps") else "throughput not measured (fifo_depths: simulate "
            "measures it)"))
    L += ["", "## Steps", "", "| step | seconds |", "|---|---|"]
    L += [f"| {k} | {v} |" for k, v in report.get("step_times", {}).items()]
    if report.get("phase_seconds"):
        L += ["", "## Simulation phases", "", "| phase | seconds |", "|---|---|"]
        L += [f"| {k} | {v} |" for k, v in report["phase_seconds"].items()]
    L += ["", "## Dataflow nodes", "",
          "| node | op | backend | PE | SIMD | cycles | LUT | BRAM18 | DSP |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report.get("nodes", []):
        res = r.get("res", {})
        L.append(f"| {r['name']} | {r['op_type']} | {r['backend']} | {r.get('PE', '')} | "
                 f"{r.get('SIMD', '')} | {r.get('cycles', '')} | {res.get('lut', '')} | "
                 f"{res.get('bram18', '')} | {res.get('dsp', '')} |")
    h = report.get("host_ops")
    if h:
        L += ["", "## Host ops", "", "```json", json.dumps(
            {"pre": h.get("pre"), "post": [{k: (v if k != "value" else "...")
                                            for k, v in o.items()} for o in h.get("post", [])]},
            indent=1), "```"]
    return "\n".join(L) + "\n"


def estimates_summary(state, clock_mhz: float) -> dict | None:
    """build_report's ``estimates``: the estimate (step estimates) beside what was measured:
    the design with its FIFOs as built (set_fifo_depths), yosys synthesis and the stitched
    RTL simulation (rtlsim)."""
    if state.estimates is None:
        return None
    out = dict(state.estimates)
    fifo = state.fifo_depths or {}
    built = fifo.get("built") or {}
    out.update({"fifo_depths": fifo.get("method"),
                "measured_cycles_per_image": built.get("interval_cycles"),
                "measured_fps": built.get("fps"),
                "measured_latency_us": built["latency_cycles"] / clock_mhz if built else None})
    rtl = state.rtlsim or {}
    synth = rtl.get("synth")
    if synth:
        out.update({f"synth_{k}": synth["totals"][k] for k in ("lut", "ff", "dsp", "bram18")})
        out["synth_fits"] = synth.get("fits")
    perf = rtl.get("performance")
    if perf:
        out.update({"rtlsim_cycles_per_image": perf["measured_interval_cycles"],
                    "rtlsim_fps": perf["measured_fps"],
                    "rtlsim_latency_us": perf["measured_latency_us"],
                    "rtlsim_latency_cycles": perf["measured_latency_cycles"]})
    return out


def phase_seconds(state) -> dict:
    """The long phases of the simulation steps (FIFO sizing, compile, simulate, synthesis, gate
    level) in the order they ran, with their seconds."""
    return {**(state.fifo_depths or {}).get("phase_seconds", {}),
            **(state.rtlsim or {}).get("phase_seconds", {})}


def write_reports(build, model) -> dict:
    st = build.state
    est_path = build.report_dir / "estimates.json"
    est = json.loads(est_path.read_text()) if est_path.exists() and st.estimates else None
    ver = build.verifier.summary() if build.verifier is not None else {"status": "not run"}
    nodes = node_table(model, est) if model is not None else []
    df_nodes = [r for r in nodes if r["backend"] != "none"] if st.host_ops else []
    all_rtl = (bool(df_nodes) and all(r["backend"] == "rtl" for r in df_nodes)
               and not st.failed_step)
    report = {
        "name": build.cfg.name,
        "status": "failed" if st.failed_step else "ok",
        "failed_step": st.failed_step,
        "error": (st.error or {}).get("message"),
        "error_type": (st.error or {}).get("type"),
        "board": build.cfg.board, "fpga_part": build.cfg.fpga_part,
        "clock_mhz": build.cfg.clock_mhz,
        "all_rtl": all_rtl,
        "non_rtl_nodes": [r for r in (st.backends or df_nodes) if r["backend"] != "rtl"],
        "nodes": nodes,
        "estimates": estimates_summary(st, build.cfg.clock_mhz),
        "folding": st.folding,
        "fifo_depths": st.fifo_depths,
        "rtl_datatype_changes": st.rtl_datatype_changes,
        "export_fixups": st.export_fixups,
        "host_ops": st.host_ops,
        "verification": {k: v for k, v in ver.items() if k != "stages"},
        "step_times": st.step_times,
        "phase_seconds": phase_seconds(st),
        "total_seconds": st.total_seconds,
        "meta": st.meta,
        "model_source": st.model_source,
        "provenance": {"model_files": st.model_files, "data_files": st.data_files,
                       "config_file": build.cfg.source_file, **provenance()},
        "config": build.cfg.to_dict(),
        "artifacts": sorted(str(p.relative_to(build.out))
                            for p in (build.out / "intermediate").glob("*.onnx")),
    }
    write_json_atomic(build.out / "verification.json", ver)
    write_json_atomic(build.out / "build_report.json", report)
    write_text_atomic(build.out / "build_report.md", _md(report))
    return report

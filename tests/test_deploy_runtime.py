"""The board runtime (deploy/pynq) off-board: tiny FINN builds (finn_build.testing), their
deploy packages, and the EXACT runtime code driving a simulated PYNQ overlay whose DMAs feed
the Verilator simulation of the build's RTL. Only the board and Vivado are faked (tests that
use the fake say ``simulated_overlay``); FINN, Verilator and the data (../shared/data through
the project loader) are real.

Compiles use ``-O0`` (FINN_BUILD_RTLSIM_OPT) and a cache private to this module."""
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from deploy.pynq import host_ops as RH
from deploy.pynq import packing as P
from deploy.pynq.package import build_package
from deploy.pynq.runtime import Classifier, DeployError, load_metadata
from finn_build.config import config_from_dict
from finn_build.pipeline import run_build
from finn_build.testing import tiny_build_dict

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rtl_env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("deploy_rtl_cache")
    mp.setenv("FINN_BUILD_RTLSIM_OPT", "-O0")
    mp.setenv("FINN_BUILD_RTLSIM_CACHE", str(cache))
    yield cache
    mp.undo()


def _build(tmp, arch):
    over = {"folding": {"target_fps": 20000}} if arch == "cnn" else {}
    cfg = config_from_dict(tiny_build_dict(tmp, arch, **over))
    rep = run_build(cfg, echo=lambda *a, **k: None)
    assert rep["status"] == "ok"
    return cfg, rep


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, rtl_env):
    """arch -> (cfg, build report, unpacked package dir)."""
    out = {}

    def get(arch):
        if arch not in out:
            tmp = tmp_path_factory.mktemp(f"deploy_{arch}")
            cfg, rep = _build(tmp / "build", arch)
            arc = build_package(cfg.out_dir, cfg, tmp / "pkg")
            with tarfile.open(arc) as tar:
                tar.extractall(tmp / "unpacked")
            out[arch] = (cfg, rep, tmp / "unpacked" / cfg.name)
        return out[arch]
    return get


@pytest.fixture(scope="module")
def overlay(tiny, rtl_env):
    """arch -> SimulatedOverlay of the tiny build (compiled once per module)."""
    from deploy.pynq.sim_overlay import SimulatedOverlay

    made = {}

    def get(arch):
        if arch not in made:
            cfg, _, pkg = tiny(arch)
            made[arch] = SimulatedOverlay(cfg.out_dir, load_metadata(pkg)[0], cache_dir=rtl_env)
        return made[arch]
    yield get
    for ov in made.values():
        ov.close()


# ---------------------------------------------------------------------------- (d) packing

@pytest.mark.parametrize("dt,shape", [
    ("UINT8", [3, 16, 49]), ("INT8", [2, 5, 4]), ("UINT4", [2, 3, 7]), ("INT4", [4, 6]),
    ("INT10", [2, 12, 1]), ("INT11", [2, 2, 6]), ("UINT2", [3, 5]), ("INT3", [2, 5, 3]),
    ("BIPOLAR", [2, 3, 13]), ("BINARY", [2, 16]), ("INT24", [2, 3]), ("UINT1", [4, 9])])
def test_numpy_packing_equals_finn(dt, shape):
    """The runtime's numpy packing == FINN's driver packing (``finnpy_to_packed_bytearray``
    with reverse_inner/reverse_endian, what FINN's PYNQ driver writes to the IODMA buffer),
    also for rows that do not fill whole bytes; unpacking inverts it like FINN's."""
    from qonnx.core.datatype import DataType
    from qonnx.util.basic import gen_finn_dt_tensor

    from finn.util.data_packing import finnpy_to_packed_bytearray, packed_bytearray_to_finnpy

    rng_x = gen_finn_dt_tensor(DataType[dt], shape)
    ref = np.ascontiguousarray(finnpy_to_packed_bytearray(
        rng_x, DataType[dt], reverse_inner=True, reverse_endian=True))
    got = P.pack(rng_x, dt, shape)
    assert got.dtype == np.uint8 and got.shape == ref.shape
    assert np.array_equal(got, ref)
    back = P.unpack(got, dt, shape)
    assert np.array_equal(back, rng_x)
    assert np.array_equal(back, packed_bytearray_to_finnpy(
        ref, DataType[dt], shape, reverse_inner=True, reverse_endian=True))


def test_packing_rejects_values_outside_the_datatype():
    with pytest.raises(ValueError, match=r"outside UINT4 \(0\.\.15\)"):
        P.pack(np.array([[3, 16]]), "UINT4", [1, 2])
    with pytest.raises(ValueError, match="integers"):
        P.pack(np.array([[0.5, 1]]), "INT4", [1, 2])


def test_finn_build_uses_the_runtime_host_ops():
    """One implementation of the host ops: finn_build (build + verification) re-exports the
    board runtime's functions."""
    from finn_build import host_ops as FH

    assert FH.apply_post is RH.apply_post and FH.apply_pre is RH.apply_pre
    assert FH.HostOpError is RH.HostOpError


# ---------------------------------------------------------------------------- (a) end to end

def _golden(model_path, xs):
    """FINN's python execution of the folded partition (the build's python golden)."""
    from qonnx.core.modelwrapper import ModelWrapper

    from finn_build.rtlsim.flow import golden_context

    m = ModelWrapper(str(model_path))
    oname = m.graph.output[0].name
    return np.stack([np.asarray(c[oname]).reshape(-1) for c in golden_context(m, list(xs))])


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_runtime_on_simulated_overlay_classifies_every_task(tiny, overlay, arch):
    """Real test images (PNG in the package) of every task -> the runtime (training's
    preprocessing, host pre-ops, numpy packing, IODMA register protocol, unpacking, post ops)
    -> the faked board's DMAs -> Verilator RTL of the build. Inputs are bit-identical to the
    project loader's; accumulators, logits and labels equal the python golden computed here
    and the build's recorded expected outputs; partial DMA batches included."""
    from deploy.pynq.sim_overlay import partition_model_path

    cfg, rep, pkg = tiny(arch)
    ov = overlay(arch)
    out = Path(cfg.out_dir)
    exp = json.loads((pkg / "samples" / "expected.json").read_text())["images"]
    ver_x = np.load(out / "verification" / "inputs.npz")["x"]  # project loader, NCHW
    meta = json.loads((pkg / "metadata.json").read_text())
    assert {e["task"] for e in exp} == {t["name"] for t in meta["tasks"]}
    clf = Classifier(pkg, ov, ov.allocate, batch_size=3)  # 4 images per task: 3 + 1
    n_runs = len(ov.runs)
    for task in [t["name"] for t in meta["tasks"]]:
        items = [e for e in exp if e["task"] == task]
        files = [pkg / e["file"] for e in items]
        x = clf.load(files, task)
        want_x = ver_x[[e["verification_index"] for e in items]].transpose(0, 2, 3, 1)
        assert x.dtype == np.uint8 and np.array_equal(x, want_x), task
        res = clf.classify(files, task)
        acc = np.array([r["acc"] for r in res])
        gold = _golden(partition_model_path(out), clf.dataflow_input(x))
        assert np.array_equal(acc, gold), task
        assert np.array_equal(acc, [e["expected"]["acc"] for e in items]), task
        a, b = clf.task(task)["slice"]
        want_logits = np.array([e["expected"]["logits"] for e in items], np.float32)[:, a:b]
        assert np.array_equal(np.array([r["logits"] for r in res], np.float32), want_logits)
        for r, e in zip(res, items):
            assert r["label"] == e["expected"]["label"] and r["task"] == task
            p = np.array(list(r["probabilities"].values()))
            assert abs(p.sum() - 1) < 1e-9 and int(np.argmax(p)) == r["label_index"]
    runs = ov.runs[n_runs:]
    assert [r["images"] for r in runs] == [3, 1] * len(meta["tasks"])
    # the RTL's steady-state interval next to FINN's estimate, as in the rtlsim step
    iv = runs[0]["interval_cycles"]
    assert 0.9 * rep["estimates"]["max_cycles"] <= iv <= 2.0 * rep["estimates"]["max_cycles"]
    assert ov.odma.read(0x00) & 0x4  # idle again


def test_simulated_overlay_needs_flush_and_invalidate_like_the_board(tiny, overlay):
    """The faked DRAM is separate from the CPU view: without ``flush`` the DMA reads stale
    bytes, without ``invalidate`` the CPU sees stale results (as with cacheable PYNQ
    buffers), so the runtime's cache maintenance is exercised."""
    cfg, rep, pkg = tiny("mlp")
    ov = overlay("mlp")
    clf = Classifier(pkg, ov, ov.allocate, batch_size=1)
    exp = json.loads((pkg / "samples" / "expected.json").read_text())["images"][0]
    xin = clf.dataflow_input(clf.load([pkg / exp["file"]], exp["task"]))
    acc = clf.accel
    zero = acc.unpack_output(acc.run_packed(acc.pack_input(np.zeros_like(xin))))
    good = acc.unpack_output(acc.run_packed(acc.pack_input(xin)))
    assert np.array_equal(good.reshape(-1), exp["expected"]["acc"])
    assert not np.array_equal(zero, good)
    acc.run_packed(acc.pack_input(np.zeros_like(xin)))  # DRAM now holds the zero image
    acc.ibuf[:] = acc.pack_input(xin)                    # no flush
    acc.execute_on_buffers(1)
    acc.obuf.invalidate()
    assert np.array_equal(acc.unpack_output(np.array(acc.obuf)), zero)
    acc.ibuf.flush()
    acc.execute_on_buffers(1)                             # no invalidate: stale CPU view
    assert np.array_equal(acc.unpack_output(np.array(acc.obuf)), zero)
    acc.obuf.invalidate()
    assert np.array_equal(acc.unpack_output(np.array(acc.obuf)), good)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_dma_metadata_equals_finns_zynq_shell_driver_shapes(tiny, arch, tmp_path):
    """FINN's Zynq shell preparation of the build's partition (ZynqBuild's transforms:
    InsertIODMA with the Pynq-Z1 AXI width, InsertDWC, SpecializeLayers, Floorplan,
    CreateDataflowPartition; no Vivado needed) read by FINN's PYNQ driver generator
    (``get_driver_shapes``) gives the package's DMA datatypes and normal/folded/packed shapes;
    packaging cross-checks a build's ``bitstream/zynq_parent.onnx`` the same way."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames

    from deploy.pynq.package import check_zynq_shell
    from deploy.pynq.sim_overlay import partition_model_path
    from finn.transformation.fpgadataflow.create_dataflow_partition import (
        CreateDataflowPartition,
    )
    from finn.transformation.fpgadataflow.floorplan import Floorplan
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_iodma import InsertIODMA
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn.util.basic import get_driver_shapes

    cfg, rep, pkg = tiny(arch)
    meta = json.loads((pkg / "metadata.json").read_text())
    m = ModelWrapper(str(partition_model_path(cfg.out_dir)))
    for t in (InsertIODMA(64), InsertDWC(), SpecializeLayers(cfg.fpga_part), Floorplan(),
              CreateDataflowPartition(partition_model_dir=str(tmp_path / "parts"))):
        m = m.transform(t).transform(GiveUniqueNodeNames()).transform(GiveReadableTensorNames())
    iodmas = [ModelWrapper(getCustomOp(n).get_nodeattr("model")).graph.node[0].op_type
              for n in m.graph.node if n.op_type == "StreamingDataflowPartition"]
    assert iodmas[0] == "IODMA_hls" and len(iodmas) == 3
    ds = get_driver_shapes(m)
    for k, side in (("i", "input"), ("o", "output")):
        d = meta["dma"][side]
        assert ds[f"{k}dt"] == [f"DataType['{d['dtype']}']"]
        assert [list(ds[f"{k}shape_{s}"][0]) for s in ("normal", "folded", "packed")] == \
            [d["shape_normal"], d["shape_folded"], d["shape_packed"]]
        assert d["shape_packed"][-1] * 8 == d["stream_width"]
    bdir = tmp_path / "build"
    (bdir / "bitstream").mkdir(parents=True)
    m.save(str(bdir / "bitstream" / "zynq_parent.onnx"))
    dma = json.loads(json.dumps(meta["dma"]))
    assert check_zynq_shell(bdir, dma) == str(bdir / "bitstream" / "zynq_parent.onnx")
    dma["output"]["shape_packed"][-1] += 1
    with pytest.raises(DeployError, match="output DMA tensor .* differs from FINN's Zynq shell"):
        check_zynq_shell(bdir, dma)


# ---------------------------------------------------------------------------- (b) errors

def test_malformed_inputs_give_one_clear_error(tiny, overlay, tmp_path):
    cfg, rep, pkg = tiny("mlp")
    ov = overlay("mlp")
    clf = Classifier(pkg, ov, ov.allocate)
    task = "tiny_pneumoniamnist"
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((27, 28), np.uint8))
    with pytest.raises(DeployError, match=r"bad\.npy: raw array has shape \(27, 28\), expected "
                                          r"\(28, 28, 1\).*resize it"):
        clf.classify([bad], task)
    with pytest.raises(DeployError, match="dtype float64; expected uint8"):
        clf.classify([np.full((28, 28), 0.5)], task)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(DeployError, match=r"junk\.png: cannot decode the image"):
        clf.classify([junk], task)
    png = (pkg / "samples" / task).glob("*.png").__next__().read_bytes()
    cut = tmp_path / "truncated.png"
    cut.write_bytes(png[: len(png) // 2])
    with pytest.raises(DeployError, match=r"truncated\.png: cannot decode the image"):
        clf.classify([cut], task)
    with pytest.raises(DeployError, match="unknown task 'chest'; this model's tasks are: "
                                          "tiny_pneumoniamnist, tiny_breastmnist"):
        clf.classify([junk], "chest")
    with pytest.raises(DeployError, match="3 tasks; choose one with --task"):
        clf.classify([junk], None)
    # no bitfile (built without Vivado): says so, and what to do
    with pytest.raises(DeployError, match="bitfile not in this package.*Vivado.*--simulate-build"):
        Classifier(pkg)
    other = tmp_path / "pkg_with_bit"
    shutil.copytree(pkg, other)
    m = json.loads((other / "metadata.json").read_text())
    m["bitfile"] = "bitfile/x.bit"
    (other / "metadata.json").write_text(json.dumps(m))
    with pytest.raises(DeployError, match=r"bitfile not found: .*bitfile/x\.bit"):
        Classifier(other)
    with pytest.raises(DeployError, match="no deploy metadata at .*--package"):
        Classifier(tmp_path)


def test_cli_errors_are_one_line_with_exit_code_2(tiny, tmp_path):
    cfg, rep, pkg = tiny("mlp")
    cli = [sys.executable, "-m", "deploy.pynq.cli"]
    cases = [(["classify", "samples", "--task", "chest"], "unknown task 'chest'"),
             (["classify", "nowhere.png", "--task", "tiny_breastmnist"],
              "nowhere.png: no such file or folder"),
             (["classify", "samples", "--task", "tiny_breastmnist"], "no image files"),
             (["selftest"], "bitfile not in this package")]
    for args, msg in cases:
        r = subprocess.run(cli + args, cwd=pkg, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], r.stderr


# ---------------------------------------------------------------------------- (c) package

def test_deploy_package_archive_runs_its_cli_on_simulated_overlay(tiny, overlay, tmp_path):
    """`make deploy-package` (its module, as a subprocess) -> one tar.gz; unpacked in a fresh
    directory, the package's own CLI classifies its real test images of every task through
    the simulated overlay (board and Vivado faked, RTL simulated) and passes its selftest."""
    cfg, rep, pkg = tiny("mlp")
    overlay("mlp")  # compiled once here; the subprocesses find it in the cache
    conf = Path(cfg.out_dir) / "config.yaml"
    dry = subprocess.run(["make", "-n", "deploy-package", f"CONFIG={conf}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert f"-m deploy.pynq.package --config {conf}" in dry.stdout, dry.stdout + dry.stderr
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "deploy.pynq.package", "--config", str(conf),
                        "--out-dir", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    arc = Path(r.stdout.strip())
    assert arc == out / "tiny_mlp.tar.gz" and sorted(p.name for p in out.iterdir()) == [arc.name]
    with tarfile.open(arc) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / "fresh")
    for f in ("README.md", "metadata.json", "samples/expected.json", "deploy/pynq/runtime.py",
              "deploy/pynq/cli.py", "deploy/pynq/packing.py", "deploy/pynq/sim_overlay.py"):
        assert f"tiny_mlp/{f}" in names, f
    assert "tiny_mlp/deploy/pynq/package.py" not in names
    root = tmp_path / "fresh" / "tiny_mlp"
    meta = json.loads((root / "metadata.json").read_text())
    assert meta["bitfile"] is None and "without Vivado" in meta["bitfile_note"]
    assert "**not in this package**" in (root / "README.md").read_text()
    exp = json.loads((root / "samples" / "expected.json").read_text())["images"]
    assert {e["task"] for e in exp} == {t["name"] for t in meta["tasks"]}
    assert all((root / e["file"]).is_file() for e in exp)
    cli = [sys.executable, "-m", "deploy.pynq.cli"]
    sim = ["--simulate-build", str(cfg.out_dir)]
    r = subprocess.run(cli + ["selftest"] + sim, cwd=root, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    st = json.loads(r.stdout)
    assert st["status"] == "pass" and st["passed"] == st["images"] == len(exp)
    assert st["runtime"] == str((root / "deploy" / "pynq").resolve())  # the unpacked copy ran
    assert st["overlay"].startswith("simulated")
    task = "tiny_bloodmnist"
    r = subprocess.run(cli + ["classify", f"samples/{task}", "--task", task, "--format", "csv",
                              "--out", "r.csv", "--batch-size", "3"] + sim,
                       cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = (root / "r.csv").read_text().splitlines()
    want = [e for e in exp if e["task"] == task]
    assert len(rows) == 1 + len(want) and rows[0].startswith("input,task,label,label_index")
    assert [row.split(",")[2] for row in rows[1:]] == [e["expected"]["label"] for e in want]
    r = subprocess.run(cli + ["throughput", "--batch-size", "8", "--repeats", "1"] + sim,
                       cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    tp = json.loads(r.stdout)["simulated"]
    assert tp["interval_cycles_per_image"] == rep["estimates"]["max_cycles"]
    assert tp["fps_at_clock"] == pytest.approx(cfg.clock_mhz * 1e6
                                               / tp["interval_cycles_per_image"], rel=1e-6)


def test_deploy_package_of_a_missing_build_says_what_to_run(tmp_path):
    cfg = config_from_dict(tiny_build_dict(tmp_path, "mlp"))
    with pytest.raises(DeployError, match=r"host_ops\.json not found.*make build"):
        build_package(cfg.out_dir, cfg, tmp_path / "out")

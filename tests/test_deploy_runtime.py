"""The board runtime (deploy/pynq) off-board: tiny FINN builds (tests/build_helpers.py), their
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

from deploy.host.package import build_package
from deploy.pynq import host_ops as RH
from deploy.pynq import packing
from deploy.pynq.runtime import Classifier, DeployError, load_metadata
from finn_build.config import config_from_dict
from finn_build.pipeline import run_build
from build_helpers import tiny_build_dict

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
    from deploy.host.sim_overlay import SimulatedOverlay

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
    got = packing.pack(rng_x, dt, shape)
    assert got.dtype == np.uint8 and got.shape == ref.shape
    assert np.array_equal(got, ref)
    back = packing.unpack(got, dt, shape)
    assert np.array_equal(back, rng_x)
    assert np.array_equal(back, packed_bytearray_to_finnpy(
        ref, DataType[dt], shape, reverse_inner=True, reverse_endian=True))


def test_packing_rejects_values_outside_the_datatype():
    with pytest.raises(ValueError, match=r"outside UINT4 \(0\.\.15\)"):
        packing.pack(np.array([[3, 16]]), "UINT4", [1, 2])
    with pytest.raises(ValueError, match="integers"):
        packing.pack(np.array([[0.5, 1]]), "INT4", [1, 2])


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
    and the build's recorded expected outputs; partial DMA batches included. Samples of
    classes the build verified no image of come from the test split (the loader's image)."""
    from deploy.host.sim_overlay import partition_model_path
    from finn_build.data import load_images

    cfg, rep, pkg = tiny(arch)
    ov = overlay(arch)
    out = Path(cfg.out_dir)
    exp = json.loads((pkg / "samples" / "expected.json").read_text())["images"]
    ver_x = np.load(out / "verification" / "inputs.npz")["x"]  # project loader, NCHW
    meta = json.loads((pkg / "metadata.json").read_text())
    assert {e["task"] for e in exp} == {t["name"] for t in meta["tasks"]}
    clf = Classifier(pkg, ov, ov.allocate, batch_size=3)  # 4 or 8 images per task: 3 + ...
    n_runs = len(ov.runs)
    size, ch = meta["input"]["size"], meta["input"]["channels"]
    for task in [t["name"] for t in meta["tasks"]]:
        items = [e for e in exp if e["task"] == task]
        files = [pkg / e["file"] for e in items]
        x = clf.load(files, task)
        want_x = []
        for e in items:
            if e["source"] == "verification":
                want_x.append(ver_x[e["verification_index"]].transpose(1, 2, 0))
            else:  # the whole split through the project loader, in order
                imgs, labels, _ = load_images(task, e["split"], sys.maxsize, size, ch,
                                              cfg.verify.data_root)
                assert labels[e["split_index"]] == e["true_label_index"], e["file"]
                want_x.append(imgs[e["split_index"]])
        assert x.dtype == np.uint8 and np.array_equal(x, np.stack(want_x)), task
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
    counts = [sum(1 for e in exp if e["task"] == t["name"]) for t in meta["tasks"]]
    assert [r["images"] for r in runs] == sum(([3] * (n // 3) + [n % 3] * (n % 3 > 0)
                                               for n in counts), [])
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

    from deploy.host.package import check_zynq_shell
    from deploy.host.sim_overlay import partition_model_path
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


def test_cli_classify_reports_an_unreadable_file_per_row_on_simulated_overlay(tiny, overlay,
                                                                              tmp_path):
    """simulated_overlay: a folder of the package's real test images plus one corrupt file ->
    the others classified as expected, the bad file in its own row (status error), exit 1;
    with --strict: exit 2, one error naming the file, no output file and no temp file."""
    import csv

    cfg, rep, pkg = tiny("mlp")
    overlay("mlp")  # compiled once here; the subprocesses find it in the cache
    task = "tiny_bloodmnist"
    exp = [e for e in json.loads((pkg / "samples" / "expected.json").read_text())["images"]
           if e["task"] == task]
    d = tmp_path / "in"
    d.mkdir()
    for e in exp:
        shutil.copy(pkg / e["file"], d / Path(e["file"]).name)
    (d / "zz_broken.png").write_bytes(b"this is not a png")
    cli = [sys.executable, "-m", "deploy.pynq.cli", "classify", str(d), "--task", task,
           "--simulate-build", str(cfg.out_dir), "--batch-size", "3", "--chunk", "2"]
    r = subprocess.run(cli + ["--format", "csv", "--out", str(tmp_path / "r.csv")], cwd=pkg,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    assert f"1 of {len(exp) + 1} inputs could not be read" in r.stderr
    assert "zz_broken.png" in r.stderr
    with open(tmp_path / "r.csv", newline="") as f:
        rows = {Path(row["input"]).name: row for row in csv.DictReader(f)}
    assert len(rows) == len(exp) + 1
    bad = rows.pop("zz_broken.png")
    assert bad["status"] == "error" and "zz_broken.png: cannot decode the image" in bad["error"]
    assert bad["label"] == ""
    for e in exp:
        row = rows[Path(e["file"]).name]
        assert row["status"] == "ok" and row["label"] == e["expected"]["label"], e["file"]
    r = subprocess.run(cli + ["--strict", "--out", str(tmp_path / "s.json")], cwd=pkg,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "zz_broken.png: cannot decode" in last
    assert "--strict" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "r.csv"]


# ---------------------------------------------------------------------------- (c) package

def test_deploy_package_archive_runs_its_cli_on_simulated_overlay(tiny, overlay, tmp_path):
    """`make deploy-package` (its module, as a subprocess) -> one tar.gz; unpacked in a fresh
    directory, the package's own CLI classifies its real test images of every task through
    the simulated overlay (board and Vivado faked, RTL simulated) and passes its selftest.
    The samples show every class of every task (tiny_bloodmnist: 8 classes, only 4 verified
    images: the other 4 classes from the test split) and selftest runs and reports them all;
    a wrong expected output of a test-split sample makes it fail."""
    cfg, rep, pkg = tiny("mlp")
    overlay("mlp")  # compiled once here; the subprocesses find it in the cache
    conf = Path(cfg.out_dir) / "config.yaml"
    dry = subprocess.run(["make", "-n", "deploy-package", f"CONFIG={conf}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert f"-m deploy.host.package --config {conf}" in dry.stdout, dry.stdout + dry.stderr
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "deploy.host.package", "--config", str(conf),
                        "--out-dir", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    arc = Path(r.stdout.strip())
    assert arc == out / "tiny_mlp.tar.gz" and sorted(p.name for p in out.iterdir()) == [arc.name]
    with tarfile.open(arc) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / "fresh")
    for f in ("README.md", "metadata.json", "samples/expected.json", "deploy/pynq/runtime.py",
              "deploy/pynq/cli.py", "deploy/pynq/packing.py", "deploy/pynq/inputs.py",
              "medimage/__init__.py", "medimage/images.py"):
        assert f"tiny_mlp/{f}" in names, f
    shipped_host_tools = [n for n in names if n.startswith("tiny_mlp/deploy/host")
                          or n.endswith(("/package.py", "/sim_overlay.py"))]
    assert shipped_host_tools == []
    root = tmp_path / "fresh" / "tiny_mlp"
    meta = json.loads((root / "metadata.json").read_text())
    assert meta["bitfile"] is None and "without Vivado" in meta["bitfile_note"]
    assert "**not in this package**" in (root / "README.md").read_text()
    exp = json.loads((root / "samples" / "expected.json").read_text())["images"]
    assert {e["task"] for e in exp} == {t["name"] for t in meta["tasks"]}
    assert all((root / e["file"]).is_file() for e in exp)
    # every class of every task has a sample (1..2 each), its true class in the file name and
    # only these files in samples/<task>/
    every = {(t["name"], c) for t in meta["tasks"] for c in t["classes"]}
    assert {(e["task"], e["true_label"]) for e in exp} == every
    for t in meta["tasks"]:
        mine = [e for e in exp if e["task"] == t["name"]]
        assert sorted(p.name for p in (root / "samples" / t["name"]).iterdir()) == \
            sorted(Path(e["file"]).name for e in mine)
        for c in t["classes"]:
            assert 1 <= sum(e["true_label"] == c for e in mine) <= 2, (t["name"], c)
        assert all(Path(e["file"]).stem.endswith(e["true_label"].replace(" ", "_"))
                   for e in mine)
    # verification images first; the test split only for classes the build verified none of
    # (tiny_bloodmnist: 8 classes, verify.images_per_task 4)
    ver = json.loads((Path(cfg.out_dir) / "verification" / "results.json").read_text())["images"]
    verified = {(d["task"], d["label"]) for d in ver}
    for e in exp:
        key = (e["task"], e["true_label_index"])
        if e["source"] == "verification":
            d = ver[e["verification_index"]]
            assert (d["task"], d["label"]) == key, e["file"]
        else:
            assert e["source"] == "split" and e["verification_index"] is None
            assert key not in verified, e["file"]
    split_items = [e for e in exp if e["source"] == "split"]
    assert {e["task"] for e in split_items} == {"tiny_bloodmnist"} and len(split_items) == 4
    assert "every class" in (root / "README.md").read_text()
    cli = [sys.executable, "-m", "deploy.pynq.cli"]
    sim = ["--simulate-build", str(cfg.out_dir)]
    r = subprocess.run(cli + ["selftest"] + sim, cwd=root, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    st = json.loads(r.stdout)
    assert st["status"] == "pass" and st["passed"] == st["images"] == len(exp)
    assert st["runtime"] == str((root / "deploy" / "pynq").resolve())  # the unpacked copy ran
    assert st["overlay"].startswith("simulated")
    # selftest ran every class of every task through the RTL
    assert sorted(r["file"] for r in st["results"]) == sorted(e["file"] for e in exp)
    assert {(r["task"], r["true_label"]) for r in st["results"]
            if r["status"] == "pass"} == every
    assert st["coverage"] == {t["name"]: {
        "images": sum(e["task"] == t["name"] for e in exp), "classes": t["classes"],
        "classes_without_image": []} for t in meta["tasks"]}
    # ... and compares them: a wrong expected accumulator of a test-split sample fails it
    bad_pkg = tmp_path / "bad_pkg"
    shutil.copytree(root, bad_pkg)
    ej = json.loads((bad_pkg / "samples" / "expected.json").read_text())
    hit = next(e for e in ej["images"] if e["source"] == "split")
    hit["expected"]["acc"][0] += 1
    (bad_pkg / "samples" / "expected.json").write_text(json.dumps(ej))
    r = subprocess.run(cli + ["selftest"] + sim, cwd=bad_pkg, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    st = json.loads(r.stdout)
    assert st["status"] == "fail" and st["passed"] == len(exp) - 1
    assert [(m["file"], m["differs"]) for m in st["mismatches"]] == [(hit["file"], ["acc"])]
    task = "tiny_bloodmnist"
    r = subprocess.run(cli + ["classify", f"samples/{task}", "--task", task, "--format", "csv",
                              "--out", "r.csv", "--batch-size", "3"] + sim,
                       cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = (root / "r.csv").read_text().splitlines()
    want = [e for e in exp if e["task"] == task]
    assert len(rows) == 1 + len(want) and rows[0].startswith("input,task,label,label_index")
    assert [row.split(",")[2] for row in rows[1:]] == [e["expected"]["label"] for e in want]
    # the folder shows every class (file names in class order: NN_<class>.png)
    classes = next(t["classes"] for t in meta["tasks"] if t["name"] == task)
    assert [Path(row.split(",")[0]).stem[3:] for row in rows[1:]] == \
        [e["true_label"].replace(" ", "_") for e in want]
    assert {e["true_label"] for e in want} == set(classes) and len(classes) == 8
    r = subprocess.run(cli + ["throughput", "--batch-size", "8", "--repeats", "1"] + sim,
                       cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    tp = json.loads(r.stdout)["simulated"]
    assert tp["interval_cycles_per_image"] == rep["estimates"]["max_cycles"]
    assert tp["fps_at_clock"] == pytest.approx(cfg.clock_mhz * 1e6
                                               / tp["interval_cycles_per_image"], rel=1e-6)


def test_package_sample_selection_covers_every_class():
    """Up to ``per_class`` verification images of each class, in class order then
    verification order; classes without one are reported (filled from the split)."""
    from deploy.host.package import pick_samples

    assert pick_samples([1, 0, 0, 1, 2, 0, 1], 4, 2) == ([1, 2, 0, 3, 4], [3])
    assert pick_samples([0, 1, 2, 3], 8, 2) == ([0, 1, 2, 3], [4, 5, 6, 7])
    assert pick_samples([1, 1, 1], 2, 1) == ([0], [0])


def test_deploy_package_of_a_missing_build_says_what_to_run(tmp_path):
    cfg = config_from_dict(tiny_build_dict(tmp_path, "mlp"))
    with pytest.raises(DeployError, match=r"host_ops\.json not found.*make build"):
        build_package(cfg.out_dir, cfg, tmp_path / "out")


# ---------------------------------------------------------------------------- (e) decisions

def _package_with(pkg, dest, decisions) -> Path:
    """A copy of an unpacked package whose tasks carry the given (hand-set) decisions."""
    shutil.copytree(pkg, dest)
    m = json.loads((dest / "metadata.json").read_text())
    for t in m["tasks"]:
        if t["name"] in decisions:
            t["decision"] = decisions[t["name"]]
    (dest / "metadata.json").write_text(json.dumps(m))
    return dest


def test_runtime_applies_the_threshold_and_temperature_on_simulated_overlay(tiny, overlay,
                                                                           tmp_path):
    """simulated_overlay: a hand-set threshold next to an image's P(positive) flips its label;
    every label is the shared rule's (positive when P >= threshold); the temperature scales
    the probabilities, not the logits; each result names the threshold used."""
    from deploy.pynq.cli import render
    from medimage import decision as rule

    cfg, rep, pkg = tiny("mlp")
    ov = overlay("mlp")
    task = "tiny_pneumoniamnist"
    files = sorted((pkg / "samples" / task).glob("*.png"))
    plain_clf = Classifier(pkg, ov, ov.allocate)
    plain = plain_clf.classify(files, task)
    assert all(r["threshold"] is None for r in plain)
    t = plain_clf.task(task)
    pos = 1 - t["negative_class"]
    p = np.array([r["probabilities"][t["classes"][pos]] for r in plain])
    i = int(np.argmax(p))
    # the most positive image: a threshold just above it makes it negative, one at it positive
    thr = float(np.nextafter(p[i], 2.0)) if plain[i]["label_index"] == pos else float(p[i])
    d = {"temperature": 1.0, "threshold": thr, "positive_class": pos}
    got = Classifier(_package_with(pkg, tmp_path / "thr", {task: d}), ov,
                     ov.allocate).classify(files, task)
    assert got[i]["label_index"] != plain[i]["label_index"]
    assert [r["label_index"] for r in got] == [pos if q >= thr else 1 - pos for q in p]
    assert all(r["threshold"] == thr for r in got)
    assert [r["logits"] for r in got] == [r["logits"] for r in plain]
    rows = render([{**r, "status": "ok"} for r in got], t["classes"], "csv", {}).splitlines()
    assert rows[0].endswith(",threshold") and all(r.endswith(f",{thr!r}") for r in rows[1:])
    # temperature: softmax(logits / T), the label still the argmax without a threshold
    hot = Classifier(_package_with(pkg, tmp_path / "temp", {task: {"temperature": 3.0}}), ov,
                     ov.allocate).classify(files, task)
    for r, q in zip(hot, plain):
        want = rule.probabilities(np.array(q["logits"]), 3.0)
        assert np.allclose(list(r["probabilities"].values()), want, rtol=0, atol=1e-12)
        assert r["label_index"] == q["label_index"] and r["threshold"] is None
    bad = _package_with(pkg, tmp_path / "bad", {task: {"temperature": 1.0, "threshold": 2.0,
                                                       "positive_class": pos}})
    with pytest.raises(DeployError, match="threshold must be in"):
        Classifier(bad, ov, ov.allocate)


def test_deploy_package_carries_the_decisions_of_a_trained_run(tiny, overlay, tmp_path):
    """A tiny training run (the build's tasks and model shape) -> its calibration.json -> its
    export's model.meta.json -> a build's model.meta.json -> the package's metadata.json,
    README and expected labels, and the runtime gives those labels (simulated_overlay). The
    build is this module's tiny build with the run's decisions in its model.meta.json: a FINN
    build of the trained weights would add only time."""
    from conftest import tiny_config

    from brevitas_models.export import export_run
    from brevitas_models.train import train
    from deploy.host.sim_overlay import partition_model_path
    from medimage import decision as rule

    cfg, rep, pkg = tiny("mlp")
    ov = overlay("mlp")
    run = tiny_config(tmp_path, "mlp", name="calibrated", train={"epochs": 1})
    train(run, progress=False)
    export_run(run.run_dir, check_per_task=1)
    exported = json.loads((run.run_dir / "export" / "model.meta.json").read_text())
    decisions = {t["name"]: t["decision"] for t in exported["tasks"]}
    cal = json.loads((run.run_dir / "calibration.json").read_text())
    assert decisions == {n: t["decision"] for n, t in cal["tasks"].items()}
    assert decisions["tiny_breastmnist"]["threshold"] is not None
    src, b = Path(cfg.out_dir), tmp_path / "build"
    for rel in ("host_ops.json", "build_report.json", "config.yaml", "model/model.meta.json",
                "verification", str(partition_model_path(src).relative_to(src))):
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (src / rel).is_dir() else shutil.copy)(src / rel, b / rel)
    meta = json.loads((b / "model" / "model.meta.json").read_text())
    for t in meta["tasks"]:
        t["decision"] = decisions[t["name"]]
    (b / "model" / "model.meta.json").write_text(json.dumps(meta))
    with tarfile.open(build_package(b, cfg, tmp_path / "out")) as tar:
        tar.extractall(tmp_path / "unpacked")
    root = tmp_path / "unpacked" / cfg.name
    md = json.loads((root / "metadata.json").read_text())
    assert {t["name"]: t["decision"] for t in md["tasks"]} == decisions
    assert (root / "medimage" / "decision.py").is_file()
    readme = (root / "README.md").read_text()
    d = decisions["tiny_breastmnist"]
    breast = next(t for t in md["tasks"] if t["name"] == "tiny_breastmnist")
    pos = breast["classes"][d["positive_class"]]
    assert f"`{pos}` when P({pos}) >= {d['threshold']:.3g}" in readme
    exp = json.loads((root / "samples" / "expected.json").read_text())["images"]
    clf = Classifier(root, ov, ov.allocate)
    for t in md["tasks"]:
        items = [e for e in exp if e["task"] == t["name"]]
        a, z = t["slice"]
        want = [int(rule.apply(np.array(e["expected"]["logits"])[a:z], t["decision"])[1])
                for e in items]
        assert [e["expected"]["label_index"] for e in items] == want
        res = clf.classify([root / e["file"] for e in items], t["name"])
        assert [r["label_index"] for r in res] == want
        assert all(r["threshold"] == t["decision"]["threshold"] for r in res)


def test_mnv2_package_selftest_and_classify_chest_xray_and_mri_on_simulated_overlay(tiny,
                                                                                     overlay):
    """A tiny MobileNetV2-lite (tests/build_helpers.TINY_MNV2: depthwise convs, residual adds,
    global pool, fused heads) on real chest X-ray and brain MRI files: all-RTL on Pynq-Z1 (no
    HLS node), its deploy package's own CLI passes selftest (every sample, every class of
    both tasks, through the Verilator RTL behind the faked board) and classifies the MRI
    samples with the build's expected labels."""
    cfg, rep, pkg = tiny("mnv2")
    assert rep["all_rtl"] and not rep["non_rtl_nodes"]
    types = {n["op_type"] for n in rep["nodes"]}
    assert {"VVAU_rtl", "AddStreams_rtl", "DuplicateStreams_rtl", "GlobalAccPool_rtl",
            "MVAU_rtl"} <= types and not any(t.endswith("_hls") for t in types)
    overlay("mnv2")  # compiled once here; the subprocesses find it in the cache
    meta = json.loads((pkg / "metadata.json").read_text())
    assert [t["name"] for t in meta["tasks"]] == ["tiny_chest_xray", "tiny_brain_mri"]
    exp = json.loads((pkg / "samples" / "expected.json").read_text())["images"]
    cli = [sys.executable, "-m", "deploy.pynq.cli"]
    sim = ["--simulate-build", str(cfg.out_dir)]
    r = subprocess.run(cli + ["selftest"] + sim, cwd=pkg, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    st = json.loads(r.stdout)
    assert st["status"] == "pass" and st["passed"] == st["images"] == len(exp)
    every = {(t["name"], c) for t in meta["tasks"] for c in t["classes"]}
    assert {(x["task"], x["true_label"]) for x in st["results"]} == every
    task = "tiny_brain_mri"
    r = subprocess.run(cli + ["classify", f"samples/{task}", "--task", task, "--format", "json",
                              "--out", "r.json"] + sim,
                       cwd=pkg, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    got = json.loads((pkg / "r.json").read_text())
    rows = got["results"]
    want = {Path(e["file"]).name: e["expected"]["label"] for e in exp if e["task"] == task}
    assert {Path(x["input"]).name: x["label"] for x in rows} == want


# ---------------------------------------------------------------------------- (f) host predict

@pytest.mark.parametrize("arch", ["mlp", "mnv2"])
def test_medzoo_predict_gives_the_board_classify_output_on_simulated_overlay(tiny, overlay,
                                                                            tmp_path, capsys,
                                                                            monkeypatch, arch):
    """simulated_overlay: the run behind a tiny build (the MedMNIST MLP; the MobileNetV2-lite
    on chest X-ray + brain MRI files) (its model, the untrained BN-calibrated one the build
    exported, saved as a run: best.pt + config.yaml, then `medzoo export`) -> `medzoo
    predict` on the package's real test images of every task gives the labels the packaged
    runtime's `classify` gives through the Verilator RTL; `--qonnx --with-acc` gives the
    build's python golden accumulators (samples/expected.json) and the board's CSV byte for
    byte (the same rows and rendering, medimage.results)."""
    import torch
    import yaml

    from brevitas_models.cli import main as medzoo
    from brevitas_models.config import config_from_dict
    from brevitas_models.train import quant_signature
    from finn_build.model_io import build_untrained

    cfg, rep, pkg = tiny(arch)
    overlay(arch)  # compiled once here; the subprocesses find it in the cache
    u = cfg.model.untrained
    model, _ = build_untrained(u, cfg.verify.data_root)
    # the build's model section as a run (the tasks' default preprocessing, as the build's)
    run = config_from_dict({"name": "behind_build", "seed": 0, "out_dir": str(tmp_path / "runs"),
                            "data": {"tasks": list(u.tasks), "size": u.input_size},
                            "model": dict(u.model)})
    run.run_dir.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "config": run.to_dict(), "epoch": 0,
                "quant_signature": quant_signature(model)}, run.run_dir / "best.pt")
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(run.to_dict(), sort_keys=False))
    assert medzoo(["export", str(run.run_dir), "--check-images", "2"]) == 0
    capsys.readouterr()
    meta = json.loads((pkg / "metadata.json").read_text())
    exp = json.loads((pkg / "samples" / "expected.json").read_text())["images"]
    monkeypatch.chdir(pkg)  # the same relative input paths in both outputs
    cli = [sys.executable, "-m", "deploy.pynq.cli"]
    sim = ["--simulate-build", str(cfg.out_dir)]
    for t in meta["tasks"]:
        task, folder = t["name"], f"samples/{t['name']}"
        items = [e for e in exp if e["task"] == task]
        board = {}
        for fmt in ("json", "csv"):
            r = subprocess.run(cli + ["classify", folder, "--task", task, "--format", fmt,
                                      "--with-acc", "--out", str(tmp_path / f"b.{fmt}")] + sim,
                               cwd=pkg, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr
            board[fmt] = (tmp_path / f"b.{fmt}").read_bytes()
        host = {}
        for name, extra in (("pytorch", []), ("qonnx", ["--qonnx"])):
            for fmt in ("json", "csv"):
                f = tmp_path / f"{name}.{fmt}"
                rc = medzoo(["predict", str(run.run_dir), folder, "--task", task, "--format",
                             fmt, "--with-acc", "--out", str(f)] + extra)
                assert rc == 0, capsys.readouterr().err
                host[name, fmt] = f.read_bytes()
        b = json.loads(board["json"])
        want_files = [e["file"] for e in items]
        assert [x["input"] for x in b["results"]] == want_files
        want_labels = [e["expected"]["label"] for e in items]
        assert [x["label"] for x in b["results"]] == want_labels, task
        for name in ("pytorch", "qonnx"):
            h = json.loads(host[name, "json"])
            assert [x["input"] for x in h["results"]] == want_files
            assert [x["label"] for x in h["results"]] == want_labels, (task, name)
            # the same row keys, and the same shared header values
            assert [list(x) for x in h["results"]] == [list(x) for x in b["results"]]
            for k in ("task", "decision", "images", "failed", "skipped"):
                assert h[k] == b[k], k
            # integer accumulators: the build's python golden (== the RTL's, board's acc)
            acc = [x["acc"] for x in h["results"]]
            assert acc == [e["expected"]["acc"] for e in items], (task, name)
            assert acc == [x["acc"] for x in b["results"]]
        # the QONNX export's host ops are the build's: the very CSV the board writes
        assert host["qonnx", "csv"] == board["csv"], task
        assert host["pytorch", "csv"].splitlines()[0] == board["csv"].splitlines()[0]


def test_demo_ends_with_each_package_diagnosing_every_class_on_simulated_overlay(tiny, overlay,
                                                                               tmp_path):
    """simulated_overlay: the end of `make demo` (deploy/host/demo.py) on the tiny MLP build:
    the package with one real test image per class, unpacked, its own selftest through the
    RTL; the printed lines name every image with the board's diagnosis, all equal to the
    golden."""
    from deploy.host import demo

    cfg, _, _ = tiny("mlp")
    overlay("mlp")  # compiled once; the package's subprocess finds it in the cache
    st = demo.demo_build(cfg, tmp_path / "deploy", log=lambda *a, **k: None)
    assert st["status"] == "pass" and st["runtime"].startswith(str(tmp_path / "deploy"))
    meta = json.loads((tmp_path / "deploy" / cfg.name / "metadata.json").read_text())
    every = {(t["name"], c) for t in meta["tasks"] for c in t["classes"]}
    assert {(r["task"], r["true_label"]) for r in st["results"]} == every
    assert st["images"] == len(every)  # one image per class
    lines = demo.report(st)
    assert len(lines) == len(every) + 2 and lines[-1].startswith(f"{len(every)}/{len(every)} "
                                                                  "images equal")
    assert all(line.rstrip().endswith("equal") for line in lines[1:-1])


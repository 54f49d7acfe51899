import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from brevitas_models.export import ExportCheckError, check_export, export_qonnx_model, export_run
from brevitas_models.train import load_data, load_run, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import tiny_config
    tmp = tmp_path_factory.mktemp("exp")
    runs = {}
    for arch in ("mlp", "cnn"):
        cfg = tiny_config(tmp, arch, name=f"exp_{arch}", train={"epochs": 1})
        train(cfg, progress=False)
        runs[arch] = cfg
    return runs


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_export_matches_brevitas_integer_exact_on_real_images(trained, arch):
    cfg = trained[arch]
    report = export_run(cfg.run_dir, check_per_task=4)
    assert report["integer_exact"] and report["mismatched_outputs"] == 0
    assert report["images"] == 12 and report["outputs"] == 12
    import json
    meta = json.loads((cfg.run_dir / "export" / "model.meta.json").read_text())
    assert meta["input"]["dtype"] == "UINT8" and meta["num_outputs"] == 12
    assert len(meta["host"]["output_scale"]) in (1, 12)
    # each task carries the decision fitted on validation at the end of training
    cal = json.loads((cfg.run_dir / "calibration.json").read_text())
    assert {t["name"]: t["decision"] for t in meta["tasks"]} == \
        {n: t["decision"] for n, t in cal["tasks"].items()}
    assert meta["checkpoint_sha256"] == cal["checkpoint_sha256"]
    from qonnx.core.modelwrapper import ModelWrapper
    mw = ModelWrapper(str(cfg.run_dir / "export" / "model.onnx"))
    assert str(mw.get_tensor_datatype(mw.graph.input[0].name)) == "UINT8"
    assert len(mw.graph.output) == 1


def test_check_catches_a_corrupted_export(trained, tmp_path):
    cfg = trained["mlp"]
    model, _ = load_run(cfg.run_dir)
    path, meta = export_qonnx_model(model, tmp_path / "m.onnx")
    assert all("decision" not in t for t in meta["tasks"])  # none given: T = 1 and argmax
    m = onnx.load(path)
    # flip the sign of the largest weight of the first layer
    init = max(m.graph.initializer, key=lambda t: np.prod(t.dims))
    w = numpy_helper.to_array(init).copy()
    i = np.unravel_index(np.abs(w).argmax(), w.shape)
    w[i] = -w[i]
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(m, path)
    data = load_data(cfg)
    with pytest.raises(ExportCheckError, match="differs"):
        check_export(model, path, data["test"].images[:16])


def test_failed_export_leaves_nothing_behind(trained, tmp_path):
    model, _ = load_run(trained["mlp"].run_dir)
    with torch.no_grad():  # a weight outside the task blocks breaks the fused-head contract
        model.heads.out.weight[0, -1] = 0.5
    out = tmp_path / "bad" / "m.onnx"
    with pytest.raises(ValueError, match="outside the task blocks"):
        export_qonnx_model(model, out)
    assert not out.exists() and not list(out.parent.glob("*"))


def test_one_bit_activations_export_as_unsigned_and_match(tmp_path):
    # Brevitas 0.13 exports QuantReLU(bit_width=1) as a bipolar quantizer; export.py fixes it
    from brevitas_models.config import ModelSection
    from brevitas_models.data import load_task
    from brevitas_models.models import build_model
    from brevitas_models.tasks import get_task

    tasks = [get_task("tiny_pneumoniamnist"), get_task("tiny_bloodmnist")]
    m = build_model(ModelSection(arch="mlp", hidden=[16], head_hidden=4, w_bits=1, a_bits=1),
                    tasks, 28)
    imgs = load_task("tiny_pneumoniamnist", channels=1)["test"].images
    m.train()
    with torch.no_grad():
        m(torch.from_numpy(imgs.transpose(0, 3, 1, 2)).float())
    m.eval()
    path, _ = export_qonnx_model(m, tmp_path / "w1a1.onnx")
    g = onnx.load(path).graph
    producers = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.op_type == "BipolarQuant":  # only weights may stay bipolar
            assert producers.get(n.input[0]) is None or producers[n.input[0]].op_type != "Relu"
    assert check_export(m, path, imgs)["integer_exact"]

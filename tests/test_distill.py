"""train.distill: quantization-aware training that also matches a trained teacher's class
probabilities (knowledge distillation), its loss, its resume and the teachers it refuses."""
import pytest
import torch
import torch.nn.functional as F

from brevitas_models.config import ConfigError
from brevitas_models.files import sha256_file
from brevitas_models.train import CheckpointError, atomic_save, distill_loss, load_data, train

from conftest import tiny_config, untrained_checkpoint

MLP = {"hidden": [16], "head_hidden": 4}
FLOAT = {"w_bits": None, "a_bits": None}
# the tiny tasks' slices: pneumonia 0:2, breast 2:4, blood 4:12
META = [{"slice": (0, 2)}, {"slice": (2, 4)}, {"slice": (4, 12)}]


def cfg_of(tmp_path, name, model=None, distill=None, **train_over):
    train_sec = {"epochs": 2, "patience": 2, **train_over}
    if distill is not None:
        train_sec["distill"] = distill
    return tiny_config(tmp_path, name=name, model={**MLP, **(model or {})},
                       data={"epoch_size": 64}, train=train_sec)


def quiet(data):
    return dict(data=data, progress=False, log=lambda *_: None)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distill")
    cfg = cfg_of(tmp, "teacher", FLOAT, epochs=1)
    data = load_data(cfg)
    train(cfg, **quiet(data))
    return tmp, cfg, data


def test_distill_loss_is_the_tempered_kl_over_each_images_own_task():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 12, generator=g), torch.randn(6, 12, generator=g)
    ids = torch.tensor([0, 2, 1, 2, 0, 1])
    assert distill_loss(t, t, ids, META, "multitask", 2.0).item() == pytest.approx(0, abs=1e-6)
    want = sum(F.kl_div(F.log_softmax(s[i, a:b] / 3, 0), F.log_softmax(t[i, a:b] / 3, 0),
                        log_target=True, reduction="sum")
               for i, (a, b) in enumerate(META[k]["slice"] for k in ids.tolist())) / 6 * 9
    assert distill_loss(s, t, ids, META, "multitask", 3.0).item() == pytest.approx(want.item())
    # another task's columns do not count; in multiclass mode all columns are one softmax
    other = t.clone()
    other[ids == 0, 4:] += 5
    assert distill_loss(s, other, ids, META, "multitask", 3.0) == pytest.approx(
        distill_loss(s, t, ids, META, "multitask", 3.0).item())
    assert distill_loss(s, other, ids, META, "multiclass", 3.0) != pytest.approx(
        distill_loss(s, t, ids, META, "multiclass", 3.0).item())


def test_a_resumed_distilled_run_is_the_uninterrupted_one_and_names_its_teacher(teacher_run):
    tmp, tcfg, data = teacher_run
    kd = {"teacher": str(tcfg.run_dir), "weight": 0.7, "temperature": 2}
    whole = cfg_of(tmp, "kd_whole", distill=kd)
    train(whole, **quiet(data))
    cut = cfg_of(tmp, "kd_cut", distill=kd)
    train(cut, stop_after_epochs=1, **quiet(data))
    train(cut, **quiet(data))
    a, b = (torch.load(c.run_dir / "best.pt", weights_only=False) for c in (whole, cut))
    assert a["distill"]["sha256"] == sha256_file(tcfg.run_dir / "best.pt")
    assert a["distill"] == b["distill"] and a["distill"]["epoch"] == 1
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # the teacher changes the training; at weight 0 it is the plain run, bit for bit
    plain, zero = cfg_of(tmp, "plain"), cfg_of(tmp, "kd_zero", distill={**kd, "weight": 0})
    for c in (plain, zero):
        train(c, **quiet(data))
    p, z = (torch.load(c.run_dir / "best.pt", weights_only=False) for c in (plain, zero))
    assert p["distill"] is None
    assert all(torch.equal(p["model"][k], z["model"][k]) for k in p["model"])
    assert not all(torch.equal(a["model"][k], p["model"][k]) for k in p["model"])


def test_a_teacher_that_changed_since_the_run_started_is_refused_on_resume(tmp_path):
    tcfg = cfg_of(tmp_path, "teacher", FLOAT, epochs=1)
    data = load_data(tcfg)
    train(tcfg, **quiet(data))
    cfg = cfg_of(tmp_path, "kd", distill={"teacher": str(tcfg.run_dir)})
    train(cfg, stop_after_epochs=1, **quiet(data))
    ck = torch.load(tcfg.run_dir / "best.pt", weights_only=False)
    ck["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in ck["model"].items()}
    atomic_save(ck, tcfg.run_dir / "best.pt")
    with pytest.raises(CheckpointError, match="teacher changed since this run started"):
        train(cfg, **quiet(data))


@pytest.mark.parametrize("source, error, words", [
    ("missing", ConfigError, "not found"),
    ("itself", ConfigError, "this run itself"),
    ("other_tasks", CheckpointError, "tasks"),
    ("other_size", CheckpointError, "data.size 32 vs 28"),
    ("not_a_checkpoint", CheckpointError, "unreadable checkpoint"),
])
def test_a_teacher_that_does_not_fit_is_one_clear_error(tmp_path, source, error, words):
    path = {"missing": tmp_path / "nope", "itself": tmp_path / "runs" / "kd"}.get(source)
    if source in ("other_tasks", "other_size"):
        over = ({"data": {"tasks": ["tiny_pneumoniamnist"], "epoch_size": 64}}
                if source == "other_tasks" else {"data": {"size": 32, "epoch_size": 64}})
        other = tiny_config(tmp_path, name=source, model={**MLP, **FLOAT}, **over)
        path = untrained_checkpoint(other, tmp_path / f"{source}.pt")
    elif source == "not_a_checkpoint":
        path = tmp_path / "best.pt"
        path.write_text("not torch")
    cfg = cfg_of(tmp_path, "kd", distill={"teacher": str(path)})
    with pytest.raises(error, match=words) as e:
        train(cfg, progress=False, log=lambda *_: None)
    assert "train.distill.teacher" in str(e.value)
    assert not (cfg.run_dir / "last.pt").exists()  # nothing trained, nothing written

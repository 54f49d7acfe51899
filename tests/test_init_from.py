"""train.init_from: quantization-aware training started from a trained (float) run of the same
network, and the ways a wrong source is refused with one clear error."""
import pytest
import torch

from brevitas_models.config import ConfigError
from brevitas_models.files import sha256_file
from brevitas_models.models import build_model
from brevitas_models.train import (CheckpointError, _is_quantizer_state, init_from_run,
                                   load_data, tasks_of, train)

from conftest import tiny_config, untrained_checkpoint

MLP = {"hidden": [16], "head_hidden": 4}
FLOAT = {"w_bits": None, "a_bits": None}


def cfg_of(tmp_path, name, model=None, **train_over):
    return tiny_config(tmp_path, name=name, model={**MLP, **(model or {})},
                       data={"epoch_size": 64}, train={"epochs": 1, **train_over})


@pytest.fixture(scope="module")
def float_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("init_from")
    cfg = cfg_of(tmp, "float", FLOAT)
    data = load_data(cfg)
    train(cfg, data=data, progress=False, log=lambda *_: None)
    return tmp, cfg, data


def test_qat_starts_from_the_float_weights(float_run):
    tmp, fcfg, _ = float_run
    cfg = cfg_of(tmp, "qat", init_from=str(fcfg.run_dir))
    model = build_model(cfg.model, tasks_of(cfg), cfg.data.size)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = init_from_run(model, cfg, log=lambda *_: None)
    src = torch.load(fcfg.run_dir / "best.pt", weights_only=False)["model"]
    copied = [k for k in model.state_dict() if not _is_quantizer_state(k)]
    assert copied and all(torch.equal(model.state_dict()[k], src[k]) for k in copied)
    assert any(not torch.equal(before[k], src[k]) for k in copied if k.endswith("weight"))
    assert got == {"path": str(fcfg.run_dir / "best.pt"),
                   "sha256": sha256_file(fcfg.run_dir / "best.pt"), "epoch": 1}


def test_a_resumed_fine_tune_is_the_uninterrupted_one_and_names_its_source(float_run):
    tmp, fcfg, data = float_run
    quiet = dict(data=data, progress=False, log=lambda *_: None)
    whole = cfg_of(tmp, "ft_whole", init_from=str(fcfg.run_dir), epochs=2, patience=2)
    train(whole, **quiet)
    cut = cfg_of(tmp, "ft_cut", init_from=str(fcfg.run_dir), epochs=2, patience=2)
    train(cut, stop_after_epochs=1, **quiet)
    train(cut, **quiet)  # resumes from last.pt: the source is not read again
    a, b = (torch.load(c.run_dir / "best.pt", weights_only=False) for c in (whole, cut))
    assert a["init_from"]["sha256"] == sha256_file(fcfg.run_dir / "best.pt")
    assert a["init_from"] == b["init_from"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    scratch = cfg_of(tmp, "scratch", epochs=2, patience=2)
    train(scratch, **quiet)
    c = torch.load(scratch.run_dir / "best.pt", weights_only=False)
    assert c["init_from"] is None
    assert not all(torch.equal(a["model"][k], c["model"][k]) for k in a["model"])


@pytest.mark.parametrize("source, error, words", [
    ("missing", ConfigError, "not found"),
    ("itself", ConfigError, "this run itself"),
    ("wider", CheckpointError, "shape"),
    ("cnn", CheckpointError, "arch cnn vs mlp"),
    ("other_tasks", CheckpointError, "tasks"),
    ("not_a_checkpoint", CheckpointError, "unreadable checkpoint"),
])
def test_a_source_that_does_not_fit_is_one_clear_error(float_run, tmp_path, source, error,
                                                       words):
    tmp, fcfg, _ = float_run
    path = {"missing": tmp_path / "nope", "itself": tmp_path / "runs" / "qat"}.get(source)
    if source == "wider":
        other = cfg_of(tmp_path, "wide", {**FLOAT, "hidden": [24]})
    elif source == "cnn":
        other = tiny_config(tmp_path, "cnn", name="cnn", train={"epochs": 1})
    elif source == "other_tasks":
        other = tiny_config(tmp_path, name="one_task", model={**MLP, **FLOAT},
                            data={"tasks": ["tiny_pneumoniamnist"], "epoch_size": 64},
                            train={"epochs": 1})
    if source in ("wider", "cnn", "other_tasks"):
        path = untrained_checkpoint(other, tmp_path / f"{source}.pt")
    elif source == "not_a_checkpoint":
        path = tmp_path / "best.pt"
        path.write_text("not torch")
    cfg = cfg_of(tmp_path, "qat", init_from=str(path))
    with pytest.raises(error, match=words) as e:
        train(cfg, progress=False, log=lambda *_: None)
    assert "train.init_from" in str(e.value)
    assert not (cfg.run_dir / "last.pt").exists()  # nothing trained, nothing written

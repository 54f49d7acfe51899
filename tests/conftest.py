import os
import warnings

import pytest

warnings.filterwarnings("ignore", category=UserWarning)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core: each keeps to one thread (torch's default,
    # a thread per core in every worker, oversubscribes the machine), its children too
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)

TINY_TASKS = ["tiny_pneumoniamnist", "tiny_breastmnist", "tiny_bloodmnist"]


def tiny_config(tmp_path, arch="mlp", **over):
    """A small real run config on the tiny MedMNIST subsets."""
    from brevitas_models.config import config_from_dict, merge
    # each arch's section takes only its own fields
    model = ({"arch": "mlp", "in_channels": 1, "hidden": [32, 16]} if arch == "mlp" else
             {"arch": arch, "in_channels": 3,
              "convs": [[8, 3, 2, 1], [8, 3, 2, 1], [16, 3, 2, 0], [16, 3, 1, 0]]})
    raw = {"name": f"tiny_{arch}", "seed": 0, "out_dir": str(tmp_path / "runs"),
           "data": {"tasks": TINY_TASKS, "epoch_size": 128},
           "model": {**model, "w_bits": 4, "a_bits": 4, "head_hidden": 8},
           "train": {"epochs": 2, "batch_size": 32, "threads": 1}}
    return config_from_dict(merge(raw, over))


def untrained_checkpoint(cfg, path):
    """An untrained best.pt of run config ``cfg`` at ``path``: for checks where only the form
    of a checkpoint counts (its network, tasks, input)."""
    from brevitas_models.models import build_model
    from brevitas_models.train import atomic_save, tasks_of
    model = build_model(cfg.model, tasks_of(cfg), cfg.data.size)
    atomic_save({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 1}, path)
    return path


@pytest.fixture
def tiny_cfg(tmp_path):
    return lambda arch="mlp", **over: tiny_config(tmp_path, arch, **over)

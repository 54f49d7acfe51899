import json
from pathlib import Path

import pytest

from brevitas_models.config import (ConfigError, config_from_dict, load_config, parse_override,
                                    schema_text)

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, field", [
    ("model: {w_bits: 9, a_bits: 4}", "model.w_bits"),
    ("model: {w_bits: 0, a_bits: 4}", "model.w_bits"),
    ("model: {w_bits: null, a_bits: 4}", "w_bits and a_bits"),
    ("model: {arch: resnet}", "model.arch"),
    ("train: {lr: -1}", "train.lr"),
    ("train: {epochs: three}", "train.epochs"),
    ("train: {loss: focal}", "train.loss"),
    ("data: {tasks: [pneumoniamnist, lungmnist]}", r"data.tasks\[1\].*lungmnist"),
    ("data: {sampling: random}", "data.sampling"),
    ("data: {augment: {zoom: 1.5}}", "data.augment.zoom"),
    ("model: {batchsize: 3}", "unknown key.*batchsize"),
    ("model: {arch: cnn, in_channels: 3, convs: [[16, 3, 2, 1]]}", "1x1 feature map"),
    ("model: {arch: cnn, convs: [[16, 3, 1]]}", r"model.convs\[0\]"),
])
def test_bad_values_name_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError, match=field):
        load_config(write(tmp_path, text))


def test_error_names_the_file(tmp_path):
    p = write(tmp_path, "train: {epochs: 0}")
    with pytest.raises(ConfigError, match=str(p)):
        load_config(p)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "model: [unclosed"))


def test_overrides_apply_and_are_validated(tmp_path):
    p = write(tmp_path, "train: {epochs: 5}")
    assert load_config(p, parse_override("train.epochs=7")).train.epochs == 7
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(p, parse_override("train.epochs=-2"))
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("train.epochs")


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml"))
                         + sorted((ROOT / "build_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    from finn_build.config import load_build_config

    if path.parent.name == "configs":
        cfg = load_config(path)
        assert config_from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()  # a dump loads back
    else:
        load_build_config(path)


def test_empty_config_file_is_refused(tmp_path):
    # an empty file would otherwise silently start the full default run
    for text in ("", "# only a comment\n"):
        with pytest.raises(ConfigError, match="config file is empty"):
            load_config(write(tmp_path, text))


@pytest.mark.parametrize("text, value", [
    ("1e-3", 1e-3), ("5E-4", 5e-4), (".5", 0.5), ("+2e-2", 0.02), ("0.001", 0.001)])
def test_float_fields_accept_yaml11_number_strings(tmp_path, text, value):
    # PyYAML (YAML 1.1) reads 1e-3 and 5E-4 as strings
    import yaml
    assert isinstance(yaml.safe_load(f"lr: {text}")["lr"], (str, float))
    assert load_config(write(tmp_path, f"train: {{lr: {text}}}")).train.lr == value
    assert load_config(write(tmp_path, "{}"), parse_override(f"train.lr={text}")).train.lr == value


@pytest.mark.parametrize("text", ["abc", "1e-3x", "'1,5'", "nan", ".nan", ".inf", "'1e'", "true"])
def test_float_fields_still_reject_garbage(tmp_path, text):
    with pytest.raises(ConfigError, match="train.weight_decay: expected a"):
        load_config(write(tmp_path, f"train: {{weight_decay: {text}}}"))


@pytest.mark.parametrize("name", ["a/b", "..", ".", "../escape", "/abs", "a\\\\b", ""])
def test_run_name_cannot_leave_out_dir(tmp_path, name):
    with pytest.raises(ConfigError, match="name: .*plain directory name"):
        load_config(write(tmp_path, f"name: \"{name}\""))


def test_batch_larger_than_epoch_size_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="train.batch_size: 64 is larger than data.epoch_size 32"):
        load_config(write(tmp_path, "data: {epoch_size: 32}\ntrain: {batch_size: 64}"))


@pytest.mark.parametrize("text, words", [
    ("model: {arch: mlp, convs: [[16, 3, 1, 1]]}",
     "model.convs: a field of arch cnn, not of arch mlp; remove it or set model.arch: cnn"),
    ("model: {convs: [[16, 3, 1, 1]]}", "model.convs: a field of arch cnn, not of arch mlp"),
    ("model: {arch: cnn, in_channels: 3, hidden: [64]}",
     "model.hidden: a field of arch mlp, not of arch cnn"),
])
def test_a_field_of_another_arch_is_named_with_its_arch(tmp_path, text, words):
    with pytest.raises(ConfigError, match=words):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("text, words", [
    ("trian: {epochs: 3}", "<top level>: unknown key(s) ['trian'] (did you mean 'train'?)"),
    ("model: {hiden: [3]}", "model: unknown key(s) ['hiden'] (did you mean 'hidden'?)"),
    ("train: {epoch: 3}", "train: unknown key(s) ['epoch'] (did you mean 'epochs'?)"),
])
def test_unknown_key_suggests_the_closest(tmp_path, text, words):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert words in str(e.value) and "known keys:" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_config_stored_before_per_arch_sections_still_loads_equal(arch):
    """Checkpoints and run snapshots written before each arch had its own section hold every
    arch's model fields; they must load and compare equal to today's config (resume, evaluate)."""
    cfg = load_config(ROOT / "configs" / f"demo_{arch}.yaml")
    old = cfg.to_dict()
    old["model"].setdefault("hidden", [64, 64])
    old["model"].setdefault("convs", [[16, 3, 1, 1], [32, 3, 2, 1], [32, 3, 2, 1], [64, 3, 1, 0],
                                      [64, 3, 1, 0], [128, 3, 1, 0]])
    assert config_from_dict(old).to_dict() == cfg.to_dict()


def test_model_arch_and_in_channels_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"model.arch: 'resnet' is not one of "
                       r"\['mlp', 'cnn', 'mobilenetv2_lite'\]"):
        load_config(write(tmp_path, "model: {arch: resnet}"))
    with pytest.raises(ConfigError, match=r"model.in_channels: 2 is not one of \[1, 3\]"):
        load_config(write(tmp_path, "model: {in_channels: 2}"))


def test_committed_json_schemas_are_current():
    from finn_build.config import schemas

    for file, schema in schemas().items():
        path = ROOT / "docs" / "schema" / file
        assert path.is_file() and path.read_text() == schema_text(schema), (
            f"{path} is stale: run `make schema` and commit it")
        assert "yaml-language-server: $schema=" in json.loads(path.read_text())["description"]

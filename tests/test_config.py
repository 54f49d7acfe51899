import pytest

from brevitas_models.config import ConfigError, load_config, parse_override


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


def test_shipped_configs_are_valid():
    from pathlib import Path
    for p in sorted(Path("configs").glob("*.yaml")):
        load_config(p)


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

"""Tasks: what a data set is and how to read it, declared as data.

A task is declared in the form of ``TaskSection`` (the schema of a task in a training config's
``data.tasks``, docs/configs.md "Tasks"). The built-in tasks below are declarations of that
same form with a data-root-relative ``path``; a training config may declare its own next to
their names. ``TaskSpec`` is the resolved, frozen form the loaders (``data.load_task``) and the
model builders use; ``TaskSpec.to_dict()`` gives the declaration back, as a run stores it
(config.yaml, model.meta.json) so that export, build and deploy read the task from the run.

Data files of the built-in tasks live under the data root (see ``data.data_root``) and are
described in ``shared/data/README.md``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medimage import Preprocess

# YAML `format` -> TaskSpec.fmt: a class-per-folder tree (folder or .tar) keeps the name its
# stored model metadata has always used ("image_tar")
FORMATS = {"image_dir": "image_tar", "npz": "npz", "csv": "csv"}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class PreprocessSection(_Strict):
    """Style-removing preprocessing of one task (medimage.preprocess), applied identically in
    training and by the board runtime (recorded in the model's metadata)."""
    crop: bool = Field(False, description="crop to the body/head bounding box, then resize")
    crop_threshold: int = Field(10, ge=0, le=100, description="foreground: brighter than this "
                                "percent of the image's 99th-percentile level")
    crop_margin: int = Field(2, ge=0, le=50, description="percent of the side kept around the box")
    normalize: Literal["none", "stretch", "equalize"] = Field(
        "none", description="per-image intensity normalization in integers: stretch (1st..99th "
        "percentile to 0..255) or histogram equalization")


class SplitRule(_Strict):
    """How a missing split is carved from train: seeded, stratified per class."""
    by: Literal["image", "patient"] = Field(
        "image", description="image: per image; patient: whole patients (the manifest's "
        "patient column, else `pattern` on the file name)")
    pattern: Optional[str] = Field(
        None, description="by: patient: a regular expression searched in the file name; the "
        "patient id is its first matching group (the whole match without groups)")
    fraction: float = Field(0.1, gt=0, lt=1, description="share of each class carved out")
    seed: int = 0

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, p):
        if p is not None:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"{p!r} is not a valid regular expression ({e})") from None
        return p


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class TaskSection(_Strict):
    """One task (a data set and its classes): a data.tasks entry, or a built-in task."""
    name: str = Field(description="the task's name (letters, digits, _ . -): heads, metrics, "
                      "the board's --task")
    path: str = Field(description="the data: absolute, or relative to the data root "
                      "(data.root, $MEDFPGA_DATA, ../shared/data)")
    format: Literal["image_dir", "npz", "csv"] = Field(description=(
        "image_dir: class-per-folder tree, a folder or a .tar of one (split folders "
        "train/ [val/] test/, or one pool of class folders); npz: MedMNIST layout "
        "{train,val,test}_{images,labels}; csv: a manifest with columns path, label "
        "[, split] [, patient], paths relative to the CSV's folder"))
    classes: Union[Literal["auto"], list[str]] = Field(
        "auto", description="class names, label index order; auto: the class folders' or the "
        "manifest's labels, sorted (the resolved list is stored with the run)")
    channels: Literal[1, 3] = Field(1, description="native channels: 1 gray, 3 RGB")
    size: int = Field(224, ge=8, le=1024, description="native side: images are brought to "
                      "size x size first (the crop's grid); npz: the arrays' side")
    negative_class: Optional[Union[str, int]] = Field(
        None, description="the no-finding class (name or index): binary tasks' negatives")
    splits: Optional[dict[Literal["train", "val", "test"], str]] = Field(
        None, description="image_dir: split -> its folder inside path ('.' = path itself: a "
        "pool read as train); null: train/ [val/] test/ when present, else one pool")
    val_split: Optional[SplitRule] = Field(
        default_factory=SplitRule, description="carves val from train when there is none; "
        "null: never")
    test_split: Optional[SplitRule] = Field(
        default_factory=lambda: SplitRule(fraction=0.2), description="carves test from "
        "train when there is none (a pool, a manifest without splits); null: never")
    preprocess: PreprocessSection = Field(
        default_factory=PreprocessSection, description="the task's default preprocessing "
        "(data.preprocess overrides it per run)")
    description: str = ""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v):
        if not _NAME.fullmatch(v):
            raise ValueError(f"{v!r} must be letters, digits, '_', '.', '-' (e.g. my_cxr)")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if isinstance(self.classes, list):
            if len(self.classes) < 2:
                raise ValueError(f"classes {self.classes}: a task needs at least 2 classes")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"classes {self.classes}: a class is listed twice")
            neg = self.negative_class
            if isinstance(neg, str) and neg not in self.classes:
                raise ValueError(f"negative_class {neg!r} is not one of classes {self.classes}")
            if isinstance(neg, int) and not 0 <= neg < len(self.classes):
                raise ValueError(f"negative_class {neg} is outside 0..{len(self.classes) - 1}")
        if self.splits is not None and self.format != "image_dir":
            raise ValueError("splits is for format image_dir only (a manifest has a split "
                             "column; an npz has its split keys); remove it")
        for rule in ("val_split", "test_split"):
            r = getattr(self, rule)
            if r is not None and r.by == "patient" and r.pattern is None \
                    and self.format != "csv":
                raise ValueError(f"{rule}.by patient needs {rule}.pattern (a regular "
                                 "expression whose first group is the patient id in the file "
                                 "name), or a csv manifest with a patient column")
        return self

    def to_spec(self) -> "TaskSpec":
        """The resolved task (classes listed: see ``data.resolve_task`` for auto)."""
        if self.classes == "auto":
            raise ValueError(f"task {self.name!r}: classes auto is not resolved yet")
        neg = self.negative_class
        return TaskSpec(
            self.name, self.path, FORMATS[self.format], tuple(self.classes), self.channels,
            self.size, self.classes.index(neg) if isinstance(neg, str) else neg,
            dict(self.splits) if self.splits is not None else None, self.description,
            self.val_split.model_dump() if self.val_split else None,
            Preprocess(**self.preprocess.model_dump()),
            self.test_split.model_dump() if self.test_split else None)


@dataclass(frozen=True)
class TaskSpec:
    name: str                   # e.g. "pneumoniamnist"
    source: str                 # `path`: absolute or relative to the data root
    fmt: str                    # "npz" | "image_tar" (class-per-folder tree) | "csv"
    classes: tuple[str, ...]    # label index -> class name (image trees: the folder names)
    channels: int               # native channels: 1 gray, 3 RGB
    size: int                   # native side length; images are square (resized if not)
    negative_class: int | None  # the "no finding" class index, or None
    split_dirs: dict | None     # image tree: split -> folder inside it ("." = the tree itself)
    description: str            # source and license, one line
    # how to carve val / test from train when the source has none: SplitRule dicts or None
    val_split: dict | None = None
    # Style-removing preprocessing (medimage.preprocess) used unless a config says otherwise:
    # on for the collections whose classes differ in framing and exposure (the shortcut audit).
    preprocess: Preprocess = Preprocess()
    test_split: dict | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        """The declaration (``TaskSection`` form): what a run stores and downstream reads."""
        fmt = {v: k for k, v in FORMATS.items()}[self.fmt]
        return {"name": self.name, "path": self.source, "format": fmt,
                "classes": list(self.classes), "channels": self.channels, "size": self.size,
                "negative_class": (None if self.negative_class is None
                                   else self.classes[self.negative_class]),
                "splits": dict(self.split_dirs) if self.split_dirs is not None else None,
                "val_split": self.val_split, "test_split": self.test_split,
                "preprocess": self.preprocess.to_dict(), "description": self.description}


def spec_from_dict(d: dict) -> TaskSpec:
    """A stored declaration (``TaskSpec.to_dict``, a config's inline task) -> TaskSpec."""
    return TaskSection.model_validate(d).to_spec()


# ------------------------------------------------------------------- built-in tasks (data)

_BLOOD = ["basophil", "eosinophil", "erythroblast", "immature granulocytes",
          "lymphocyte", "monocyte", "neutrophil", "platelet"]
_BRAIN = ["glioma", "meningioma", "notumor", "pituitary"]
_MEDMNIST = "MedMNIST v2 (Yang et al. 2023), CC BY 4.0"
_PBC = ("BloodMNIST-equivalent built from the PBC data set (Acevedo et al. 2020), CC BY 4.0; "
        "stratified seeded split, not the official MedMNIST index lists")
_KERMANY = "Kermany et al. 2018 pediatric chest X-rays (Mendeley/Kaggle), CC BY 4.0"
_NICKPARVAR = "Nickparvar Brain Tumor MRI Dataset (Kaggle), CC0 upstream"
# Chosen on the shortcut audit and validation (docs/results.md, "Shortcut audit").
STYLE_ROBUST = Preprocess(crop=True, normalize="stretch")
_ROBUST = {"crop": True, "normalize": "stretch"}
# Kermany file names -> patient (as data.patient_id): personNNN_..., [NORMAL2-]IM-NNNN-MMMM
KERMANY_PATIENT = r"(?i)^(?:(person\d+)_(?:bacteria|virus)_\d+|((?:NORMAL2-)?IM-\d+)-\d+)"


def _npz(name, path, classes, channels, negative, desc):
    return {"name": name, "path": path, "format": "npz", "classes": classes,
            "channels": channels, "size": 28, "negative_class": negative, "description": desc}


BUILTIN: list[dict] = [
    _npz("pneumoniamnist", "pneumoniamnist_28.npz", ["normal", "pneumonia"], 1, "normal",
         f"PneumoniaMNIST, {_MEDMNIST}"),
    # BreastMNIST label 1 is "normal+benign": that is the no-finding class here.
    _npz("breastmnist", "breastmnist_28.npz", ["malignant", "normal+benign"], 1,
         "normal+benign", f"BreastMNIST, {_MEDMNIST}"),
    _npz("bloodmnist", "bloodmnist_like_pbc_28.npz", _BLOOD, 3, None, _PBC),
    _npz("tiny_pneumoniamnist", "tiny_pneumoniamnist_28.npz", ["normal", "pneumonia"], 1,
         "normal", f"class-balanced 64/16/16 subset of PneumoniaMNIST, {_MEDMNIST}"),
    _npz("tiny_breastmnist", "tiny_breastmnist_28.npz", ["malignant", "normal+benign"], 1,
         "normal+benign", f"class-balanced 64/16/16 subset of BreastMNIST, {_MEDMNIST}"),
    _npz("tiny_bloodmnist", "tiny_bloodmnist_like_28.npz", _BLOOD, 3, None,
         f"class-balanced 64/16/16 subset of the {_PBC}"),
    {"name": "chest_xray", "path": "chest_xray_kermany_224.tar", "format": "image_dir",
     "classes": ["NORMAL", "PNEUMONIA"], "channels": 1, "size": 224, "negative_class": "NORMAL",
     "splits": {"train": "chest_xray_kermany_224/train", "test": "chest_xray_kermany_224/test"},
     "val_split": {"by": "patient", "pattern": KERMANY_PATIENT}, "test_split": None,
     "preprocess": _ROBUST,
     "description": f"{_KERMANY}; official train/test, 224x224 JPEG stored as RGB"},
    {"name": "brain_mri", "path": "brain_tumor_mri_4class_224.tar", "format": "image_dir",
     "classes": _BRAIN, "channels": 1, "size": 224,
     "splits": {"train": "brain_tumor_mri_4class_224/Training",
                "test": "brain_tumor_mri_4class_224/Testing"},
     "test_split": None, "preprocess": _ROBUST,
     "description": f"{_NICKPARVAR}; 224x224 JPEG, mixed L/RGB, has train/test duplicates"},
    # Test fixtures: original-resolution, non-square samples, resized to 224 like the full sets.
    {"name": "tiny_chest_xray", "path": "tiny_fixtures.tar", "format": "image_dir",
     "classes": ["NORMAL", "PNEUMONIA"], "channels": 1, "size": 224, "negative_class": "NORMAL",
     "splits": {"test": "cxr_kermany_official_val_16"}, "val_split": None, "test_split": None,
     "preprocess": _ROBUST,
     "description": f"16 original-resolution images of the official Kermany val split, {_KERMANY}"},
    {"name": "tiny_brain_mri", "path": "tiny_fixtures.tar", "format": "image_dir",
     "classes": _BRAIN, "channels": 1, "size": 224,
     "splits": {"test": "brain_mri_nickparvar_test_17"}, "val_split": None, "test_split": None,
     "preprocess": _ROBUST, "description": f"17 original-resolution test images, {_NICKPARVAR}"},
]

TASKS: dict[str, TaskSpec] = {d["name"]: spec_from_dict(d) for d in BUILTIN}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}; "
                         "or declare your own in data.tasks (docs/your_data.md)") from None

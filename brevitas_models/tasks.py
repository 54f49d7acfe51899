"""Task registry: the one place that says which data sets exist and what they look like.

Everything else (loaders, models, training, export) looks tasks up here by name.
Data files live under the data root (see ``data.data_root``) and are described in
``shared/data/README.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

from medimage import Preprocess


@dataclass(frozen=True)
class TaskSpec:
    name: str                   # registry key, e.g. "pneumoniamnist"
    source: str                 # file name under the data root
    fmt: str                    # "npz" (MedMNIST layout) | "image_tar" (class-per-folder trees)
    classes: tuple[str, ...]    # label index -> class name (for image_tar: also the folder names)
    channels: int               # native channels: 1 gray, 3 RGB
    size: int                   # native side length; images are square (resized if not)
    negative_class: int | None  # binary tasks: index of the "no finding" class; None for multi-class
    split_dirs: dict | None     # image_tar: split -> folder inside the archive
    description: str            # source and license, one line
    # How to carve a validation split from train when the source has none:
    # "patient" (whole patients, see data.patient_id), "image" (stratified per image), None.
    val_split: str | None = None
    # Style-removing preprocessing (medimage.preprocess) used unless a config says otherwise:
    # on for the collections whose classes differ in framing and exposure (the shortcut audit).
    preprocess: Preprocess = Preprocess()

    @property
    def num_classes(self) -> int:
        return len(self.classes)


_BLOOD_CLASSES = ("basophil", "eosinophil", "erythroblast", "immature granulocytes",
                  "lymphocyte", "monocyte", "neutrophil", "platelet")
_BRAIN_CLASSES = ("glioma", "meningioma", "notumor", "pituitary")

_MEDMNIST = "MedMNIST v2 (Yang et al. 2023), CC BY 4.0"
_PBC = ("BloodMNIST-equivalent built from the PBC data set (Acevedo et al. 2020), CC BY 4.0; "
        "stratified seeded split, not the official MedMNIST index lists")
_KERMANY = "Kermany et al. 2018 pediatric chest X-rays (Mendeley/Kaggle), CC BY 4.0"
_NICKPARVAR = "Nickparvar Brain Tumor MRI Dataset (Kaggle), CC0 upstream"
# Chosen on the shortcut audit and validation (docs/results.md, "Shortcut audit").
STYLE_ROBUST = Preprocess(crop=True, normalize="stretch")


def _npz(name, source, classes, channels, negative, desc):
    return TaskSpec(name, source, "npz", classes, channels, 28, negative, None, desc)


_SPECS = [
    _npz("pneumoniamnist", "pneumoniamnist_28.npz", ("normal", "pneumonia"), 1, 0,
         f"PneumoniaMNIST, {_MEDMNIST}"),
    # BreastMNIST label 1 is "normal+benign": that is the no-finding class here.
    _npz("breastmnist", "breastmnist_28.npz", ("malignant", "normal+benign"), 1, 1,
         f"BreastMNIST, {_MEDMNIST}"),
    _npz("bloodmnist", "bloodmnist_like_pbc_28.npz", _BLOOD_CLASSES, 3, None, _PBC),
    _npz("tiny_pneumoniamnist", "tiny_pneumoniamnist_28.npz", ("normal", "pneumonia"), 1, 0,
         f"class-balanced 64/16/16 subset of PneumoniaMNIST, {_MEDMNIST}"),
    _npz("tiny_breastmnist", "tiny_breastmnist_28.npz", ("malignant", "normal+benign"), 1, 1,
         f"class-balanced 64/16/16 subset of BreastMNIST, {_MEDMNIST}"),
    _npz("tiny_bloodmnist", "tiny_bloodmnist_like_28.npz", _BLOOD_CLASSES, 3, None,
         f"class-balanced 64/16/16 subset of the {_PBC}"),
    TaskSpec("chest_xray", "chest_xray_kermany_224.tar", "image_tar", ("NORMAL", "PNEUMONIA"),
             1, 224, 0,
             {"train": "chest_xray_kermany_224/train", "test": "chest_xray_kermany_224/test"},
             f"{_KERMANY}; official train/test, 224x224 JPEG stored as RGB",
             val_split="patient", preprocess=STYLE_ROBUST),
    TaskSpec("brain_mri", "brain_tumor_mri_4class_224.tar", "image_tar", _BRAIN_CLASSES,
             1, 224, None,
             {"train": "brain_tumor_mri_4class_224/Training",
              "test": "brain_tumor_mri_4class_224/Testing"},
             f"{_NICKPARVAR}; 224x224 JPEG, mixed L/RGB, has train/test duplicates",
             val_split="image", preprocess=STYLE_ROBUST),
    # Test fixtures: original-resolution, non-square samples, resized to 224 like the full sets.
    TaskSpec("tiny_chest_xray", "tiny_fixtures.tar", "image_tar", ("NORMAL", "PNEUMONIA"),
             1, 224, 0, {"test": "cxr_kermany_official_val_16"},
             f"16 original-resolution images of the official Kermany val split, {_KERMANY}",
             preprocess=STYLE_ROBUST),
    TaskSpec("tiny_brain_mri", "tiny_fixtures.tar", "image_tar", _BRAIN_CLASSES,
             1, 224, None, {"test": "brain_mri_nickparvar_test_17"},
             f"17 original-resolution test images, {_NICKPARVAR}", preprocess=STYLE_ROBUST),
]

TASKS: dict[str, TaskSpec] = {s.name: s for s in _SPECS}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None

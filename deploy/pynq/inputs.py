"""What the runtime accepts as model input: image files, prepared exactly as training prepared
the task's images (``medimage``), or raw ``.npy`` arrays already at the model input.

An image file is decoded to the task's native channel count and goes through the task's path
(``medimage.to_model_input``) with the preprocessing the model was trained with (the task's
``preprocess`` in the metadata: crop, intensity normalization; none when absent), so a PNG of
a MedMNIST image, or a chest X-ray JPEG, gives the training pixels bit for bit. Errors are
``ImageError`` naming the file, the problem and the fix.

The implementation is ``medimage.results``, shared with the host's ``medzoo predict``: both
turn a file into the model input with the same function.
"""
from __future__ import annotations

from medimage.results import RAW_EXTS, check_raw, decode, from_file, load_input  # noqa: F401

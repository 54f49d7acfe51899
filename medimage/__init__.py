"""The conventions shared by training (``brevitas_models``) and the board runtime
(``deploy.pynq``): the image input (decoding, channel conversion, resize, accepted file types)
and the decision rule on the output (``decision``: temperature-scaled probabilities, a binary
task's threshold). numpy + Pillow only (pydicom too, imported only when a DICOM file is
decoded), and nothing from this project: it sits at the bottom, everything else may import it."""
from . import decision  # noqa: F401
from .decision import decide, probabilities  # noqa: F401
from .images import (  # noqa: F401
    DICOM_EXTS,
    IMAGE_EXTS,
    ImageError,
    convert_image,
    decode,
    is_dicom,
    resize,
    to_channels,
)
from .preprocess import NORMALIZE, Preprocess, crop_box, normalize, standardize, to_model_input  # noqa: F401,E501

"""Image conventions shared by training (``brevitas_models``) and the board runtime
(``deploy.pynq``): decoding, channel conversion, resize, accepted file types. numpy + Pillow
only, and nothing from this project: it sits at the bottom, everything else may import it."""
from .images import (  # noqa: F401
    IMAGE_EXTS,
    ImageError,
    convert_image,
    decode,
    resize,
    to_channels,
    to_model_input,
)

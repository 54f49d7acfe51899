"""Tensor <-> AXI-Stream beats with FINN's packing conventions (``finn.util.data_packing``:
innermost folded dimension packed into one beat, element 0 in the least significant bits,
two's complement for signed types), as uint32 words per beat for the C++ driver."""
from __future__ import annotations

import numpy as np


def _words(width: int) -> int:
    return (width + 31) // 32


def ints_to_words(ints, width: int) -> np.ndarray:
    nb = _words(width) * 4
    buf = b"".join(int(x).to_bytes(nb, "little") for x in ints)
    return np.frombuffer(buf, np.uint32).reshape(-1, _words(width)).copy()


def words_to_ints(words: np.ndarray) -> list:
    w = np.ascontiguousarray(words, np.uint32)
    return [int.from_bytes(row.tobytes(), "little") for row in w]


def pack(x: np.ndarray, dtype: str, folded_shape, width: int) -> np.ndarray:
    """FINN tensor (any shape with the folded shape's element count) -> [beats, words]."""
    from qonnx.core.datatype import DataType

    from finn.util.data_packing import npy_to_rtlsim_input

    a = np.asarray(x, np.float32).reshape([int(d) for d in folded_shape])
    return ints_to_words(npy_to_rtlsim_input(a, DataType[dtype], width), width)


def pack_many(xs, dtype: str, folded_shape, width: int) -> np.ndarray:
    """Several tensors (one per image) streamed back to back."""
    return np.concatenate([pack(x, dtype, folded_shape, width) for x in xs])


def unpack(words: np.ndarray, dtype: str, folded_shape, width: int) -> np.ndarray:
    """[beats, words] -> FINN tensor of the folded shape (float32 container)."""
    from qonnx.core.datatype import DataType

    from finn.util.data_packing import rtlsim_output_to_npy

    dt = DataType[dtype]
    out = rtlsim_output_to_npy(words_to_ints(words), None, dt, [int(d) for d in folded_shape],
                               width, dt.bitwidth())
    return np.asarray(out, np.float32)


def beats_of(folded_shape) -> int:
    n = 1
    for d in list(folded_shape)[:-1]:
        n *= int(d)
    return n

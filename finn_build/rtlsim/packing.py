"""Tensor <-> AXI-Stream beats with FINN's packing conventions (``finn.util.data_packing``:
innermost folded dimension packed into one beat, element 0 in the least significant bits,
two's complement for signed types), as uint32 words per beat for the C++ driver.

The bit packing is ``deploy.pynq.packing`` (vectorized numpy, equal to FINN's functions,
tested against them); FINN's own ``npy_to_rtlsim_input`` packs element by element in Python
and took 95% of a 2M-cycle simulation's time."""
from __future__ import annotations

import numpy as np

from deploy.pynq import packing as board_packing  # the one numpy implementation (board too)


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
    by = board_packing.pack(x, dtype, folded_shape)  # [..., bytes per beat], vectorized numpy
    by = by.reshape(-1, by.shape[-1])
    pad = _words(width) * 4 - by.shape[1]
    if pad < 0:
        raise ValueError(f"{by.shape[1]} bytes per beat do not fit a {width}-bit stream")
    by = np.concatenate([by, np.zeros((by.shape[0], pad), np.uint8)], axis=1)
    return np.ascontiguousarray(by).view("<u4").astype(np.uint32)


def pack_many(xs, dtype: str, folded_shape, width: int) -> np.ndarray:
    """Several tensors (one per image) streamed back to back."""
    shape = [int(d) for d in folded_shape]
    return pack(np.stack([np.asarray(x).reshape(shape) for x in xs]), dtype,
                [len(xs)] + shape, width)


def unpack(words: np.ndarray, dtype: str, folded_shape, width: int) -> np.ndarray:
    """[beats, words] -> FINN tensor of the folded shape (float32 container)."""
    shape = [int(d) for d in folded_shape]
    nb = board_packing.beat_bytes(dtype, shape[-1])
    by = np.ascontiguousarray(words, "<u4").view(np.uint8).reshape(len(words), -1)[:, :nb]
    return board_packing.unpack(by, dtype, shape).astype(np.float32)


def beats_of(folded_shape) -> int:
    n = 1
    for d in list(folded_shape)[:-1]:
        n *= int(d)
    return n

"""FINN tensors <-> the bytes FINN's IODMAs move (numpy only; runs on the board).

The layout is what FINN's PYNQ driver produces with ``finnpy_to_packed_bytearray(x, dt,
reverse_inner=True, reverse_endian=True)``: the innermost dimension of the folded shape is one
AXI-Stream beat; element 0 sits in the least significant bits, signed types are two's
complement in ``bits`` bits, BIPOLAR {-1,+1} is stored as {0,1}; each beat is padded with zero
bits to whole bytes and stored little-endian. ``tests/test_deploy_runtime.py`` checks this
against FINN's own function.
"""
from __future__ import annotations

import re

import numpy as np


def dtype_info(name: str):
    """FINN datatype name -> (bits, signed, bipolar). Integer types only."""
    if name == "BIPOLAR":
        return 1, False, True
    if name == "BINARY":
        return 1, False, False
    m = re.fullmatch(r"(U?)INT(\d+)", name)
    if not m or not 1 <= int(m.group(2)) <= 62:
        raise ValueError(f"unsupported FINN datatype {name!r} (integer types UINTn/INTn "
                         "with n <= 62, BIPOLAR, BINARY)")
    return int(m.group(2)), m.group(1) != "U", False


def value_range(name: str):
    bits, signed, bipolar = dtype_info(name)
    if bipolar:
        return -1, 1
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def beat_bytes(name: str, inner: int) -> int:
    """Bytes per packed beat of ``inner`` elements."""
    return (dtype_info(name)[0] * int(inner) + 7) // 8


def pack(x, dtype: str, folded_shape) -> np.ndarray:
    """Integer-valued array with the folded shape's element count -> uint8
    ``folded_shape[:-1] + [beat_bytes]``."""
    bits, signed, bipolar = dtype_info(dtype)
    shape = [int(d) for d in folded_shape]
    a = np.asarray(x)
    if a.size != int(np.prod(shape)):
        raise ValueError(f"cannot pack {a.size} values into folded shape {shape}")
    a = a.reshape(shape)
    v = a.astype(np.int64)
    if not np.array_equal(v, a):
        raise ValueError(f"values for {dtype} must be integers")
    lo, hi = value_range(dtype)
    if v.size and (v.min() < lo or v.max() > hi or (bipolar and np.any(v == 0))):
        raise ValueError(f"values outside {dtype} ({lo}..{hi}): min {v.min()}, max {v.max()}")
    if bipolar:
        v = (v + 1) // 2
    if bits == 8:  # whole bytes: the two's complement byte of each element
        return (v & 0xFF).astype(np.uint8)
    u = v & ((1 << bits) - 1)
    bitplanes = (u[..., None] >> np.arange(bits, dtype=np.int64)) & 1   # [..., k, bits] LSB first
    flat = bitplanes.reshape(shape[:-1] + [shape[-1] * bits]).astype(np.uint8)
    pad = (-flat.shape[-1]) % 8
    if pad:
        flat = np.concatenate([flat, np.zeros(shape[:-1] + [pad], np.uint8)], axis=-1)
    return np.packbits(flat, axis=-1, bitorder="little")


def unpack(packed, dtype: str, folded_shape) -> np.ndarray:
    """uint8 ``folded_shape[:-1] + [beat_bytes]`` -> int64 array of the folded shape (padding
    bits above the last element are ignored)."""
    bits, signed, bipolar = dtype_info(dtype)
    shape = [int(d) for d in folded_shape]
    nb = beat_bytes(dtype, shape[-1])
    p = np.asarray(packed, np.uint8)
    if p.size != int(np.prod(shape[:-1])) * nb:
        raise ValueError(f"{p.size} packed bytes do not hold folded shape {shape} of {dtype} "
                         f"({nb} bytes per beat)")
    p = p.reshape(shape[:-1] + [nb])
    if bits == 8:
        v = p.astype(np.int64)
    else:
        b = np.unpackbits(p, axis=-1, bitorder="little")[..., : shape[-1] * bits]
        b = b.reshape(shape + [bits]).astype(np.int64)
        v = (b << np.arange(bits, dtype=np.int64)).sum(-1)
    if signed:
        v = np.where(v >= (1 << (bits - 1)), v - (1 << bits), v)
    if bipolar:
        v = 2 * v - 1
    return v

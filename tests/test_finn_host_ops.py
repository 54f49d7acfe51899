"""Host-op records: exact application and inversion (numpy only)."""
import numpy as np

from finn_build import host_ops


def test_post_ops_affine_and_inverse():
    rng = np.random.default_rng(0)
    acc = rng.integers(-500, 500, size=(5, 12)).astype(np.float32)
    s = rng.uniform(1e-3, 3e-3, size=(1, 12)).astype(np.float32)
    b = rng.normal(size=12).astype(np.float32)
    host = {"pre": [{"op": "reshape", "shape": [1, 784]}],
            "post": [{"op": "mul", "value": s.tolist()}, {"op": "add", "value": b.tolist()}]}
    y = host_ops.apply_post(host, acc)
    np.testing.assert_array_equal(y, acc * s + b)
    back = host_ops.invert_post(host, y)
    assert np.abs(back - acc).max() < 1e-2
    x = np.zeros((1, 1, 28, 28), np.float32)
    assert host_ops.apply_pre(host, x).shape == (1, 784)
    t = {"pre": [{"op": "transpose", "perm": [0, 2, 3, 1]}]}
    assert host_ops.apply_pre(t, np.zeros((1, 3, 28, 28))).shape == (1, 28, 28, 3)

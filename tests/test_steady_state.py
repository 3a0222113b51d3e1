"""The JIT path allocates nothing of the data's size in steady state.

tracemalloc sees every NumPy data buffer.  After warm-up, a train step on the
numba backend may create only small Python objects (views, floats, the index
vector of integer labels: 8 bytes per sample).
"""

import tracemalloc

import numpy as np
import pytest

import fastnet as fn

pytest.importorskip("numba")
from numba.core import config as numba_config  # noqa: E402

# Run as Python (NUMBA_DISABLE_JIT, in CI) a step of these kernels takes seconds under
# tracemalloc; every step after the warm-up does the same work, so two show what five do.
STEPS = 2 if numba_config.DISABLE_JIT else 5


def _peak_bytes(fn_, steps=STEPS):
    fn_()  # warm-up: workspaces are allocated here
    tracemalloc.start()
    try:
        for _ in range(steps):
            fn_()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("batch", [1, 3, 64])
@pytest.mark.parametrize("optimizer", [fn.SGD(1e-3, momentum=0.9), fn.Adam(1e-4)], ids=["sgd", "adam"])
def test_train_step_allocates_no_arrays(batch, optimizer):
    layers = [fn.DenseLayer("relu", 784, neurons_num=64, rng=0),
              fn.DenseLayer("identity", neurons_num=10, rng=1)]
    net = fn.NeuralNetwork(layers, "softmax_xent", optimizer, backend="numba")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    peak = _peak_bytes(lambda: net.train_step(x, y))
    # 16 KiB of Python objects at most; a weight-sized temporary (784 * 64 * 4 =
    # 200 KB) would show at every batch size, a batch-sized one from B = 64 on.
    assert peak < 16_384 < layers[0].w.nbytes, peak


def test_numpy_reference_does_allocate():
    """The probe sees the reference path's temporaries, so it can fail."""
    layers = [fn.DenseLayer("relu", 784, neurons_num=64, rng=0),
              fn.DenseLayer("identity", neurons_num=10, rng=1)]
    net = fn.NeuralNetwork(layers, "softmax_xent", fn.SGD(1e-3), backend="numpy")
    x = np.ones((64, 784), np.float32)
    assert _peak_bytes(lambda: net.train_step(x, np.zeros(64, np.int64))) > layers[0].w.nbytes

"""pytest-benchmark micro-benchmarks of each kernel on each backend.

Skipped in the normal test run (``--benchmark-skip`` in pyproject.toml). Run
them, writing JSON, with the command in the README:

    python -m pytest tests/test_bench_kernels.py -o addopts="" --benchmark-only \\
        --benchmark-json=kernel-bench.json

Grouped by kernel; ``extra_info`` carries the batch size and the FLOPs of one
call.  Each case runs once before timing, so JIT compilation is not timed.
"""

import numpy as np
import pytest

import fastnet as fn
from fastnet.kernels import ACTIVATION_CODES, LOSS_CODES

WIDTH = 512
BATCHES = [1, 16, 256]
BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(b not in fn.available_backends(),
                                                      reason=f"{b} not available"))
            for b in ("numpy", "numba")]


def _arrays(batch, dtype=np.float32):
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, WIDTH)).astype(dtype)
    w = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(dtype)
    b = np.zeros((1, WIDTH), dtype)
    dy = rng.standard_normal((batch, WIDTH)).astype(dtype)
    return x, w, b, dy, np.empty_like(dy), np.empty_like(dy), np.empty_like(dy), np.empty_like(w), \
        np.empty_like(b), np.empty_like(x)


def _run(benchmark, group, batch, flops, func):
    func()  # compile and warm up outside the timing
    benchmark.group = group
    benchmark.extra_info.update({"batch": batch, "width": WIDTH, "flops": flops})
    benchmark(func)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
def test_dense_forward(benchmark, backend, batch):
    k = fn.backend.kernels_for(backend)
    x, w, b, dy, a, y, dz, dw, db, dx = _arrays(batch)
    relu = ACTIVATION_CODES["relu"]
    _run(benchmark, "dense_forward", batch, 2 * batch * WIDTH * WIDTH,
         lambda: k.dense_forward(x, w, b, relu, 0.0, a, y))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
def test_dense_backward(benchmark, backend, batch):
    k = fn.backend.kernels_for(backend)
    x, w, b, dy, a, y, dz, dw, db, dx = _arrays(batch)
    relu = ACTIVATION_CODES["relu"]
    k.dense_forward(x, w, b, relu, 0.0, a, y)
    _run(benchmark, "dense_backward", batch, 2 * batch * WIDTH * WIDTH,
         lambda: k.dense_backward(x, a, y, dy, relu, 0.0, dz, dw, db))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
def test_input_grad(benchmark, backend, batch):
    k = fn.backend.kernels_for(backend)
    x, w, b, dy, a, y, dz, dw, db, dx = _arrays(batch)
    _run(benchmark, "input_grad", batch, 2 * batch * WIDTH * WIDTH, lambda: k.input_grad(dy, w, dx))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_activation_grad(benchmark, backend, batch, activation):
    k = fn.backend.kernels_for(backend)
    x, w, b, dy, a, y, dz, dw, db, dx = _arrays(batch)
    kind = ACTIVATION_CODES[activation]
    k.activation_forward(kind, 0.0, x, y)
    _run(benchmark, f"activation_grad[{activation}]", batch, 0,
         lambda: k.activation_grad(kind, 0.0, x, y, dy, dz))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
def test_softmax_xent(benchmark, backend, batch):
    k = fn.backend.kernels_for(backend)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((batch, 10)).astype(np.float32)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
    out = np.empty_like(z)
    code = LOSS_CODES["softmax_xent"]
    _run(benchmark, "softmax_xent value+grad", batch, 0,
         lambda: (k.loss_value(code, z, t), k.loss_grad(code, z, t, out)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_optimizer_step(benchmark, backend, optimizer):
    k = fn.backend.kernels_for(backend)
    rng = np.random.default_rng(0)
    p, g, m, v = (rng.standard_normal((WIDTH, WIDTH)).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    if optimizer == "adam":
        step = lambda: k.adam_step(p, g, m, v, 1e-6, 0.9, 0.999, 1e-8, 0.0, 10)  # noqa: E731
    else:
        step = lambda: k.sgd_step(p, g, m, 1e-6, 0.9, 0.0, False)  # noqa: E731
    _run(benchmark, optimizer, 0, 0, step)

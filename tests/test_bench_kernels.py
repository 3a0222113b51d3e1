"""pytest-benchmark micro-benchmarks of each kernel on each backend.

Skipped in the normal test run (``--benchmark-skip`` in pyproject.toml). Run
them, writing JSON, with the command in the README:

    python -m pytest tests/test_bench_kernels.py -o addopts="" --benchmark-only \\
        --benchmark-json=kernel-bench.json

Every benchmark has the same three parameters, ``backend``, ``batch`` (None
where the kernel has no batch: the optimizer steps) and ``variant`` (the
activation, loss or optimizer), so ``--benchmark-group-by`` takes any of them.
The group is the kernel, its variant and the batch size, so that a group's
relative column compares the backends on one shape.  ``extra_info`` carries
the batch, the width and the floating-point operations of one call (``flops``,
counted from the reference formulas: a multiply-add is 2, and exp, tanh and
sqrt count 1 each).  Each case runs once before timing, so JIT compilation is
not timed.
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


def _run(benchmark, kernel, variant, batch, flops, func):
    func()  # compile and warm up outside the timing
    benchmark.group = f"{kernel}[{variant}]" + ("" if batch is None else f" B={batch}")
    benchmark.extra_info.update({"batch": batch, "width": WIDTH, "flops": flops})
    benchmark(func)


def _mm(batch):  # the flops of one (batch x WIDTH) @ (WIDTH x WIDTH) product
    return 2 * batch * WIDTH * WIDTH


#: flops per element of dz = dy * f'(a) (relu: the multiply; tanh: dy * (1 - y^2); gelu's
#: tanh form: its cubic, two sigmoids of 3 each, the derivative's products and the multiply)
GRAD_FLOPS = {"relu": 1, "tanh": 3, "gelu": 20}
#: flops per parameter of a step (sgd: v = mu v + g, p -= lr v; adam: both moments, the
#: two bias corrections, sqrt, eps, the division and p -= lr * ...)
STEP_FLOPS = {"sgd_momentum": 4, "adam": 14}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("variant", ["relu"])
def test_dense_forward(benchmark, backend, batch, variant):
    k = fn.backend.kernels_for(backend)
    x, w, b, dy, a, y, dz, dw, db, dx = _arrays(batch)
    relu = ACTIVATION_CODES[variant]
    # x @ w, then + b and relu per output
    _run(benchmark, "dense_forward", variant, batch, _mm(batch) + 2 * batch * WIDTH,
         lambda: k.dense_forward(x, w, b, relu, 0.0, a, y))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("variant", ["relu"])
def test_dense_backward(benchmark, backend, batch, variant):
    k = fn.backend.kernels_for(backend)
    x, w, b, dy, a, y, dz, dw, db, dx = _arrays(batch)
    relu = ACTIVATION_CODES[variant]
    k.dense_forward(x, w, b, relu, 0.0, a, y)
    # dz = dy * f'(a), db = mean of dz, dw = x.T @ dz / B
    _run(benchmark, "dense_backward", variant, batch, _mm(batch) + 3 * batch * WIDTH + WIDTH * WIDTH,
         lambda: k.dense_backward(x, a, y, dy, relu, 0.0, dz, dw, db))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("variant", ["-"])
def test_input_grad(benchmark, backend, batch, variant):
    k = fn.backend.kernels_for(backend)
    x, w, b, dy, a, y, dz, dw, db, dx = _arrays(batch)
    _run(benchmark, "input_grad", variant, batch, _mm(batch), lambda: k.input_grad(dy, w, dx))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("variant", ["relu", "tanh", "gelu"])
def test_activation_grad(benchmark, backend, batch, variant):
    k = fn.backend.kernels_for(backend)
    x, w, b, dy, a, y, dz, dw, db, dx = _arrays(batch)
    kind = ACTIVATION_CODES[variant]
    k.activation_forward(kind, 0.0, x, y)
    _run(benchmark, "activation_grad", variant, batch, GRAD_FLOPS[variant] * batch * WIDTH,
         lambda: k.activation_grad(kind, 0.0, x, y, dy, dz))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("variant", ["softmax_xent"])
def test_loss(benchmark, backend, batch, variant):
    k = fn.backend.kernels_for(backend)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((batch, 10)).astype(np.float32)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
    out = np.empty_like(z)
    code = LOSS_CODES[variant]
    # value (max, z - max, exp, sum, log, - z.t: about 7 per element) and the gradient
    # (exp, sum, division, - t: about 6)
    _run(benchmark, "loss value+grad", variant, batch, 13 * batch * 10,
         lambda: (k.loss_value(code, z, t), k.loss_grad(code, z, t, out)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [None])
@pytest.mark.parametrize("variant", ["sgd_momentum", "adam"])
def test_optimizer_step(benchmark, backend, batch, variant):
    k = fn.backend.kernels_for(backend)
    rng = np.random.default_rng(0)
    p, g, m, v = (rng.standard_normal((WIDTH, WIDTH)).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    if variant == "adam":
        step = lambda: k.adam_step(p, g, m, v, 1e-6, 0.9, 0.999, 1e-8, 0.0, 10)  # noqa: E731
    else:
        step = lambda: k.sgd_step(p, g, m, 1e-6, 0.9, 0.0, False)  # noqa: E731
    _run(benchmark, "optimizer_step", variant, batch, STEP_FLOPS[variant] * WIDTH * WIDTH, step)

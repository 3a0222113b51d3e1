"""A step never leaves a non-finite parameter behind: the step whose update
could overflow raises FloatingPointError naming it and its layer, with every
parameter and every array of the optimizer's state exactly as before."""

import re

import numpy as np
import pytest

import fastnet as fn

BACKENDS = fn.available_backends()
# path -> (optimizer, batch, keep_grads): the numba backend's paths at these settings
PATHS = {
    "fused": (lambda: fn.SGD(0.05, momentum=0.9), 6, False),
    "fused-plain": (lambda: fn.SGD(0.05), 6, False),
    "fused-blas": (lambda: fn.SGD(0.05), 32, False),  # products by BLAS, from the compiled step
    "fused-blas-momentum": (lambda: fn.SGD(0.05, momentum=0.9, weight_decay=1e-4), 32, False),
    "fused-blas-decay": (lambda: fn.SGD(0.05, weight_decay=1e-4), 32, False),
    "fused-adam": (lambda: fn.Adam(1e-3), 6, False),  # dw by the tiles' update of zeros
    "fused-blas-adam": (lambda: fn.Adam(1e-3, weight_decay=1e-4), 32, False),
    "keep-grads": (lambda: fn.SGD(0.05), 6, True),
    "keep-grads-adam": (lambda: fn.Adam(1e-3), 6, True),  # the layered path
}


def _net(backend, optimizer, dtype=np.float32):
    layers = [fn.DenseLayer("tanh", 4, neurons_num=5, rng=0, dtype=dtype),
              fn.DenseLayer("identity", neurons_num=3, rng=1, dtype=dtype)]
    return fn.NeuralNetwork(layers, "softmax_xent", optimizer, backend=backend)


def _snapshot(net):
    st = net.optimizer.state
    arrays = [*st["m"], *st["v"]] if isinstance(st, dict) else list(st or ())
    return [p.copy() for p in net.parameters()] + [a.copy() for a in arrays]


def _same(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and x.tobytes() == y.tobytes()
                                    for x, y in zip(a, b, strict=True))


def _no_first_column(batch, rng):
    """Normal inputs with a first column of 0: the first layer's weights from
    that column get no gradient, so they keep the 1e-38 the tests give them."""
    x = rng.normal(size=(batch, 4)).astype(np.float32)
    x[:, 0] = 0
    return x


def _huge_column(batch, rng):
    """Inputs whose first column is 3e38 (the others normal), for a first
    layer whose weights from that column are 1e-38: the pre-activations stay
    moderate (tanh does not saturate, dz is not 0), the loss finite, and the
    first layer's weight gradient reaches about 3e38 * dz."""
    x = rng.normal(size=(batch, 4)).astype(np.float32)
    x[:, 0] = 3e38
    return x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", list(PATHS))
def test_an_update_that_would_overflow_is_refused_with_nothing_changed(backend, path):
    """Before: such a step returned a finite loss and wrote inf into the first
    layer's weights (lr 10 times a gradient near 1e38), with no error at that step."""
    make_opt, batch, keep_grads = PATHS[path]
    opt = make_opt()
    opt.lr = 10.0
    net = _net(backend, opt)
    net.layers[0].w[0] = 1e-38
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, batch)
    net.train_step(_no_first_column(batch, rng), y, keep_grads=keep_grads)
    if backend == "numba" and not keep_grads:
        assert net.plan(batch) == "fused"
    before = _snapshot(net)
    refused = r"in train_step: the update of layers\[0\] could overflow"
    with (np.errstate(over="ignore", invalid="ignore"),  # NumPy's products warn of overflow
          pytest.raises(FloatingPointError, match=refused)):
        net.train_step(_huge_column(batch, rng), y, keep_grads=keep_grads)
    assert _same(_snapshot(net), before)
    net.train_step(rng.normal(size=(batch, 4)).astype(np.float32), y, keep_grads=keep_grads)  # still usable
    assert all(np.isfinite(p).all() for p in net.parameters())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["sgd", "gd"])
def test_fit_names_the_epoch_and_step_whose_update_was_refused(backend, mode):
    """The second batch of four holds the huge column: with mode="sgd" fit raises
    at epoch 1, step 2, leaving the parameters of step 1; with "gd" the epoch's
    gradient holds it, and the one update of epoch 1 is refused."""
    recorded = []

    class RecordingSGD(fn.SGD):
        def _step(self, kernels, params, grads):
            super()._step(kernels, params, grads)
            recorded.append([p.copy() for p in params])

    rng = np.random.default_rng(2)
    X = np.concatenate([_no_first_column(4, rng), _huge_column(4, rng)])
    y = rng.integers(0, 3, 8)
    net = _net(backend, RecordingSGD(10.0, momentum=0.9))
    net.layers[0].w[0] = 1e-38
    initial = [p.copy() for p in net.parameters()]
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(FloatingPointError) as info:
        net.fit(X, y, epochs=3, batch_size=4, mode=mode, shuffle=False, progress=False)
    where = "at epoch 1, step 2" if mode == "sgd" else "at epoch 1"
    assert re.search(rf"{where}: the update of layers\[0\] could overflow", str(info.value)), str(info.value)
    assert len(recorded) == (1 if mode == "sgd" else 0)
    for p, q in zip(net.parameters(), recorded[-1] if recorded else initial, strict=True):
        assert p.tobytes() == q.tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_learning_rate_the_dtype_cannot_hold_is_refused_before_any_update(backend):
    """Before: SGD(1e39) passed validation (in float64) and was inf in a float32 network."""
    net = _net(backend, fn.SGD(1e39))
    before = _snapshot(net)
    x, y = np.ones((3, 4), np.float32), np.array([0, 1, 2])
    for call in (lambda: net.train_step(x, y), lambda: net.fit(x, y, progress=False)):
        with pytest.raises(ValueError, match=r"lr=1e\+39 is beyond the range of float32"):
            call()
    assert _same(_snapshot(net), before)
    wide = _net(backend, fn.SGD(1e39), dtype=np.float64)  # float64 holds it
    wide.train_step(x.astype(np.float64), y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", list(PATHS))
def test_ordinary_training_never_looks_at_the_weights_again(backend, path, monkeypatch):
    """The bounds the steps carry forward stay close to the arrays' own maxima,
    so no step of ordinary training falls back on a pass over the weights (a
    version that bounded bounds from bounds grew them geometrically and fell
    back every 7th step)."""
    make_opt, batch, keep_grads = PATHS[path]
    net = _net(backend, make_opt())
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(batch, 4)).astype(np.float32), rng.integers(0, 3, batch)
    net.train_step(x, y, keep_grads=keep_grads)
    passes = []
    state = net.step_state
    exact = state.exact_bounds
    monkeypatch.setattr(state, "exact_bounds", lambda n: (passes.append(1), exact(n))[1])
    for _ in range(300):
        net.train_step(x, y, keep_grads=keep_grads)
    assert passes == [] and net.step_state is state
    for i, la in enumerate(net.layers):  # still bounds (they grow by each step's bound, linearly)
        assert state.bounds[i, 0] >= max(np.abs(la.w).max(), np.abs(la.b).max())

"""The fused training step agrees with the layered reference path, at every
batch size: its products by the register tiles and compiled loops up to
``FUSED_MAX_BATCH`` rows, and by BLAS called from the compiled step past it
(``tuning.fused_by_blas``).

Same data, same initial weights: one network on the numba backend (whose
``train_step`` takes the fused path) and one on the numpy reference
(layered).  Tolerances: one float32 step differs by rounding of
the same sums in other orders, |d| <= 1e-5 |ref| + 1e-6 max|ref| (as in the
JIT agreement tests); over 200 steps those differences are carried along by
a training map that is close to a contraction at this learning rate, so the
bound grows at most linearly: 200 x 1e-5.  float64: 1e-12 per step.
"""

import copy

import numpy as np
import pytest

import fastnet as fn
from fastnet.kernels import ACTIVATIONS

pytest.importorskip("numba")
from numba.core import config as numba_config  # noqa: E402

from fastnet.kernels.numba.tuning import (  # noqa: E402
    FUSED_MAX_BATCH,
    FUSED_MAX_BATCH_ADAM,
    MOMENTUM_FLUSH_EVERY,
    fused_by_blas,
)

STEP_TOL = {np.float32: 1e-5, np.float64: 1e-12}
LOSSES = {"softmax_xent": "identity", "bce_logits": "identity", "mse": "tanh"}


def _pair(activation, loss, dtype, optimizer):
    nets = []
    for backend in ("numpy", "numba"):
        layers = [fn.DenseLayer(activation, 6, neurons_num=9, dtype=dtype, rng=1),
                  fn.DenseLayer(activation, neurons_num=7, dtype=dtype, rng=2),
                  fn.DenseLayer(LOSSES[loss], neurons_num=3, dtype=dtype, rng=3)]
        nets.append(fn.NeuralNetwork(layers, loss, optimizer(), backend=backend))
    return nets


def _data(loss, batch, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, 6)).astype(dtype)
    if loss == "softmax_xent":
        return x, rng.integers(0, 3, batch)
    if loss == "bce_logits":
        return x, rng.integers(0, 2, (batch, 3))
    return x, rng.normal(size=(batch, 3)).astype(dtype)


def _close(got, ref, tol, atol=0.0):
    scale = max(np.abs(ref).max(), 1e-30)
    np.testing.assert_array_less(np.abs(got - ref), tol * np.abs(ref) + tol * scale / 10 + atol + 1e-300)


OPTIMIZERS = {"sgd": lambda: fn.SGD(0.05), "momentum": lambda: fn.SGD(0.05, momentum=0.9),
              "nesterov+decay": lambda: fn.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
              "adam+decay": lambda: fn.Adam(0.01, eps=1e-3, weight_decay=1e-3)}
# Adam's step lr m / (sqrt(v) + eps) changes by up to lr / eps times a change of the gradient (the
# slope of g / (|g| + eps) at g = 0): the rounding of the gradients' sums in another order, up to
# the step tolerance times the gradients' scale (about 1 here: inputs of unit variance, dz <= 1),
# reaches a parameter amplified that much, in absolute terms (10x here; with eps = 1e-8 a unit
# whose gradient nearly vanishes would take any tolerance).  A wrong rule moves a parameter by
# about lr = 0.01 a step, 100 times more in float32.  SGD's step: lr times it, within tol.
GAIN = {"adam+decay": 0.01 / 1e-3}


def _atol(optimizer, tol):
    return GAIN.get(optimizer, 0.0) * tol
# both sides of the tiles' 4-row groups and of the switch to BLAS, and large batches
BATCHES = sorted({1, 2, 3, 7, 16, 17, 31, 32, 33, 64, 255, 256, 257, 1000,
                  FUSED_MAX_BATCH - 1, FUSED_MAX_BATCH, FUSED_MAX_BATCH + 1,
                  FUSED_MAX_BATCH_ADAM, FUSED_MAX_BATCH_ADAM + 1})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_one_step_agrees(activation, loss, optimizer, dtype):
    for batch in BATCHES:
        ref, jit = _pair(activation, loss, dtype, OPTIMIZERS[optimizer])
        assert jit.plan(batch) == "fused"
        x, y = _data(loss, batch, dtype, seed=batch)
        tol = STEP_TOL[dtype]
        np.testing.assert_allclose(jit.train_step(x, y), ref.train_step(x, y), rtol=tol, atol=tol)
        for got, want in zip(jit.parameters(), ref.parameters(), strict=True):
            _close(got, want, tol, _atol(optimizer, tol))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("loss", list(LOSSES))
def test_two_hundred_steps_agree(loss, optimizer, dtype):
    ref, jit = _pair("tanh", loss, dtype, OPTIMIZERS[optimizer])
    rng = np.random.default_rng(7)
    x_all, y_all = _data(loss, 64, dtype, seed=7)
    tol = 200 * STEP_TOL[dtype]
    for step in range(200):  # every 4th step past the tiles' limit: products by BLAS
        top = 64 if step % 4 == 3 else FUSED_MAX_BATCH
        idx = rng.integers(0, 64, int(rng.integers(1, top + 1)))
        loss_j, loss_r = jit.train_step(x_all[idx], y_all[idx]), ref.train_step(x_all[idx], y_all[idx])
        np.testing.assert_allclose(loss_j, loss_r, rtol=tol, atol=tol)
    for got, want in zip(jit.parameters(), ref.parameters(), strict=True):
        _close(got, want, tol, _atol(optimizer, tol))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 0.0), (0.9, 1e-3), (0.0, 1e-3)])
def test_updates_by_blas_agree_between_and_at_the_flushes(momentum, weight_decay, dtype):
    """Momentum by BLAS updates w by ``?axpy`` on most steps and by the flushing
    pass on one in MOMENTUM_FLUSH_EVERY (the plan's first included); plain SGD
    with weight decay by ``?axpy`` always.  A plan's steps at one batch size,
    past two flushes, each step against the reference (the bound grows by
    STEP_TOL a step, as over the 200 steps above)."""
    for batch in (FUSED_MAX_BATCH + 1, 33, 257):
        assert fused_by_blas(batch, 9 * 7 * np.dtype(dtype).itemsize)
        _sgd_steps_agree(momentum, weight_decay, batch, dtype, MOMENTUM_FLUSH_EVERY + 3)


@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 0.0), (0.9, 1e-3), (0.0, 1e-3)])
def test_updates_by_blas_without_axpy_take_the_passes(monkeypatch, momentum, weight_decay):
    """Where the BLAS found has no ``?axpy`` (its address 0), the step updates by
    its compiled passes, flushing at every step, and still agrees."""
    from fastnet.kernels.numba import fused

    monkeypatch.setattr(fused, "axpy_address", lambda dtype: 0)
    jit, (x, y) = _sgd_steps_agree(momentum, weight_decay, 33, np.float32, 4)
    if momentum and not weight_decay:  # a velocity gone subnormal is 0 after the next step
        v = jit.optimizer.state[0]
        jit.layers[0].b[0, 0] = -1e6
        v[:, 0] = np.finfo(np.float32).tiny
        jit.train_step(x, y)
        assert np.all(v[:, 0] == 0)


def _sgd_steps_agree(momentum, weight_decay, batch, dtype, steps):
    """``steps`` SGD steps of one batch size on a fresh pair, each against the
    reference, parameters and velocities (the bound grows by STEP_TOL a step);
    returns the numba network and the last batch."""
    ref, jit = _pair("relu", "softmax_xent", dtype,
                     lambda: fn.SGD(0.05, momentum=momentum, weight_decay=weight_decay))
    for step in range(steps):
        x, y = _data("softmax_xent", batch, dtype, seed=step)
        tol = (step + 1) * STEP_TOL[dtype]
        np.testing.assert_allclose(jit.train_step(x, y), ref.train_step(x, y), rtol=tol, atol=tol)
        for got, want in zip(_with_state(jit), _with_state(ref), strict=True):
            _close(got, want, tol)
    return jit, (x, y)


def _with_state(net):
    """The parameters, then the optimizer's velocities (SGD without momentum: none)."""
    return net.parameters() + [v for v in net.optimizer.state or () if v.size]


def test_momentum_by_blas_flushes_subnormal_velocities():
    """A dead unit's velocity decays by 0.9 a step; once subnormal it is set to
    0 within MOMENTUM_FLUSH_EVERY steps (``flush_subnormal``: else it would stay
    at the smallest subnormal for ever, every later update slow), and the
    steps between leave it to BLAS (its ``?axpy`` cannot flush)."""
    batch, tiny = 32, np.finfo(np.float32).tiny
    net = _pair("relu", "softmax_xent", np.float32, lambda: fn.SGD(0.05, momentum=0.9))[1]
    x, y = _data("softmax_xent", batch, np.float32)
    assert fused_by_blas(batch, 0) and net.plan(batch) == "fused"
    net.train_step(x, y)  # the plan's first step: a flush
    net.layers[0].b[0, 0] = -1e6  # unit 0 of the first layer dead: a zero gradient from here on
    v = net.optimizer.state[0]
    v[:, 0] = tiny  # the smallest normal: 0.9 of it is subnormal
    for step in range(2, MOMENTUM_FLUSH_EVERY + 2):
        net.train_step(x, y)
        column = v[:, 0]
        if step <= MOMENTUM_FLUSH_EVERY:
            assert np.all((column != 0) & (np.abs(column) < tiny)), (step, column)
        else:  # step MOMENTUM_FLUSH_EVERY + 1: the plan's second flush
            assert np.all(column == 0), (step, column)


WIDE = (70, 137, 203, 10)  # odd widths past the 4 x 16 float32 a 512-bit vector loop body takes


def _wide_pair(activations, optimizer, dtype):
    """(numpy, numba) networks WIDE, softmax cross-entropy, the same initial weights."""
    nets = []
    for backend in ("numpy", "numba"):
        layers = [fn.DenseLayer(activations[0], WIDE[0], neurons_num=WIDE[1], dtype=dtype, rng=1),
                  fn.DenseLayer(activations[1], neurons_num=WIDE[2], dtype=dtype, rng=2),
                  fn.DenseLayer("identity", neurons_num=WIDE[3], dtype=dtype, rng=3)]
        nets.append(fn.NeuralNetwork(layers, "softmax_xent", optimizer(), backend=backend))
    return nets


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam+decay"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_wide_layers_agree(activation, optimizer, dtype):
    """Layers wide enough for the compiled loops' vector bodies, with odd
    remainders, and every batch size of the fused path (the 4-sample groups
    and their rests; run as Python, NUMBA_DISABLE_JIT, up to two groups and
    their rests and the largest batch: the same code paths, in a quarter of
    the time)."""
    batches = range(1, FUSED_MAX_BATCH + 1)
    if numba_config.DISABLE_JIT:
        batches = [*range(1, 10), FUSED_MAX_BATCH]
    for batch in batches:
        ref, jit = _wide_pair((activation, activation), OPTIMIZERS[optimizer], dtype)
        assert jit.plan(batch) == "fused"
        rng = np.random.default_rng(batch)
        x, y = rng.normal(size=(batch, WIDE[0])).astype(dtype), rng.integers(0, WIDE[3], batch)
        tol = 2 * STEP_TOL[dtype]  # two steps
        for _ in range(2):  # the second step reads the momentum state the first wrote
            np.testing.assert_allclose(jit.train_step(x, y), ref.train_step(x, y), rtol=tol, atol=tol)
        for got, want in zip(jit.parameters(), ref.parameters(), strict=True):
            _close(got, want, tol, _atol(optimizer, tol))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_fifty_blas_steps_agree(optimizer, dtype):
    """Batches past FUSED_MAX_BATCH (products by BLAS, the update folded into
    the weight-gradient product), on layers wide enough for BLAS's kernels;
    fit's default batch size (32) among them."""
    ref, jit = _wide_pair(("relu", "tanh"), OPTIMIZERS[optimizer], dtype)
    adam = optimizer.startswith("adam")
    rng = np.random.default_rng(11)
    x_all = rng.normal(size=(256, WIDE[0])).astype(dtype)
    y_all = rng.integers(0, WIDE[3], 256)
    tol = 50 * STEP_TOL[dtype]
    for step in range(50):
        low = FUSED_MAX_BATCH_ADAM if adam else FUSED_MAX_BATCH
        batch = 32 if step % 5 == 0 and not adam else int(rng.integers(low + 1, low + 45))
        assert jit.plan(batch) == "fused" and fused_by_blas(batch, 0, adam=adam)
        idx = rng.integers(0, 256, batch)
        np.testing.assert_allclose(jit.train_step(x_all[idx], y_all[idx]),
                                   ref.train_step(x_all[idx], y_all[idx]), rtol=tol, atol=tol)
    assert all(la.dw is None and la.db is None for la in jit.layers)
    for got, want in zip(jit.parameters(), ref.parameters(), strict=True):
        _close(got, want, tol, _atol(optimizer, tol))


def test_adam_keeps_the_tiles_to_its_own_limit():
    """The products' choice, as ``plan`` reports it and as the step's plan makes
    it: Adam's register tiles up to FUSED_MAX_BATCH_ADAM rows, SGD's to
    FUSED_MAX_BATCH (``tuning``: where each was measured faster)."""
    from fastnet.training.paths import execution_plan, plan

    for make, limit in ((lambda: fn.SGD(0.1, momentum=0.5), FUSED_MAX_BATCH),
                        (fn.Adam, FUSED_MAX_BATCH_ADAM)):
        net = _wide_pair(("relu", "relu"), make, np.float32)[1]
        x = np.ones((1, WIDE[0]), np.float32)
        net.train_step(x, np.zeros(1, np.int64))  # the optimizer's state, which the plan is made from
        for batch, by_blas in ((limit, False), (limit + 1, True)):
            path, reason = plan(net, batch)
            assert path == "fused" and ("BLAS" in reason) == by_blas, (batch, reason)
            assert (execution_plan(net, batch)[1].gemm[0] != 0) == by_blas, batch


def test_fused_path_at_every_batch_for_sgd_adam_and_built_in_activations():
    for batch in (1, FUSED_MAX_BATCH, FUSED_MAX_BATCH + 1, 4096):
        for make in (lambda: fn.SGD(0.1), lambda: fn.SGD(0.1, momentum=0.5),
                     lambda: fn.SGD(0.1, momentum=0.5, nesterov=True, weight_decay=1e-4), fn.Adam):
            assert _wide_pair(("relu", fn.ReLU()), make, np.float32)[1].plan(batch) == "fused"


@pytest.mark.parametrize("optimizer", [lambda: fn.SGD(0.1, momentum=0.9), lambda: fn.Adam(0.01)])
@pytest.mark.parametrize("batch", [FUSED_MAX_BATCH, FUSED_MAX_BATCH + 1])
def test_fused_divergence_updates_nothing(batch, optimizer):
    _, jit = _wide_pair(("relu", "relu"), optimizer, np.float32)
    assert jit.plan(batch) == "fused"
    jit.train_step(np.ones((batch, WIDE[0]), np.float32), np.zeros(batch, np.int64))  # state made
    jit.layers[0].w[...] = 1e20  # finite weights and input whose forward overflows
    x = np.full((batch, WIDE[0]), 1e20, np.float32)
    before = [p.copy() for p in jit.parameters()]
    state = jit.optimizer.state
    state_before = copy.deepcopy(state)
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(FloatingPointError, match="train_step"):
        jit.train_step(x, np.zeros(batch, np.int64))
    for got, want in zip(jit.parameters(), before, strict=True):
        np.testing.assert_array_equal(got, want)
    if isinstance(state, dict):  # Adam: its moments and its step count
        assert state["t"] == state_before["t"] == 1
        for key in ("m", "v"):
            for got, want in zip(state[key], state_before[key], strict=True):
                np.testing.assert_array_equal(got, want)
    else:
        for got, want in zip(state, state_before, strict=True):
            np.testing.assert_array_equal(got, want)


def test_fused_path_leaves_no_gradients_and_keep_grads_gives_them():
    ref, jit = _pair("relu", "softmax_xent", np.float64, OPTIMIZERS["momentum"])
    x, y = _data("softmax_xent", 4, np.float64)
    jit.train_step(x, y)
    assert all(la.dw is None and la.db is None and la.dx is None for la in jit.layers)
    jit.train_step(x, y, keep_grads=True)
    ref.train_step(x, y)
    ref.train_step(x, y)
    assert all(la.dw is not None for la in jit.layers)
    for got, want in zip(jit.gradients(), ref.gradients(), strict=True):
        _close(got, want, 1e-12)


def test_configurations_that_do_not_qualify_fall_back():
    class Square(fn.Activation):
        name = "square"

        def f(self, a):
            return a * a

        def df(self, a):
            return 2 * a

    class OwnSGD(fn.SGD):  # a subclass may have a rule of its own
        pass

    layers = [fn.DenseLayer("relu", 6, neurons_num=5, rng=0), fn.DenseLayer("identity", neurons_num=3, rng=1)]
    assert fn.NeuralNetwork(layers, "mse", OwnSGD(0.1), backend="numba").plan(1) == "layered"
    assert fn.NeuralNetwork(layers, "mse", fn.SGD(0.1), backend="numpy").plan(1) == "layered"
    custom = [fn.DenseLayer(Square(), 6, neurons_num=5, rng=0),
              fn.DenseLayer("identity", neurons_num=3, rng=1)]
    net = fn.NeuralNetwork(custom, "mse", fn.SGD(0.1), backend="numba")
    assert net.plan(1) == "layered"
    x, y = _data("mse", 2, np.float32)
    assert np.isfinite(net.train_step(x, y))


def test_divergence_on_the_fused_path_updates_nothing():
    _, jit = _pair("relu", "softmax_xent", np.float32, lambda: fn.SGD(0.1))
    assert jit.plan(2) == "fused"
    jit.layers[0].w[...] = 1e20  # finite weights and input whose forward overflows
    x = np.full((2, 6), 1e20, np.float32)
    before = [p.copy() for p in jit.parameters()]
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(FloatingPointError, match="train_step"):
        jit.train_step(x, np.array([0, 1]))
    for p, q in zip(jit.parameters(), before, strict=True):
        np.testing.assert_array_equal(p, q)


def test_fused_step_sees_replaced_weights_and_activations():
    ref, jit = _pair("relu", "mse", np.float64, OPTIMIZERS["sgd"])
    x, y = _data("mse", 3, np.float64)
    jit.train_step(x, y)
    ref.train_step(x, y)
    for net in (ref, jit):  # swap in new arrays and a new activation between steps
        net.layers[0].w = np.ascontiguousarray(net.layers[0].w * 0.5)
        net.layers[1].activation = fn.Tanh()
    np.testing.assert_allclose(jit.train_step(x, y), ref.train_step(x, y), rtol=1e-12)
    for got, want in zip(jit.parameters(), ref.parameters(), strict=True):
        _close(got, want, 1e-12)


def test_big_weights_switch_to_blas_products_earlier():
    from fastnet.kernels.numba.tuning import FUSED_BIG_WEIGHTS, FUSED_MAX_BATCH_BIG_WEIGHTS

    side = int(np.sqrt(FUSED_BIG_WEIGHTS // 4))  # a float32 layer of exactly the limit
    for w_bytes, big in ((side * side * 4, True), ((side - 1) * side * 4, False)):
        assert not fused_by_blas(FUSED_MAX_BATCH_BIG_WEIGHTS, w_bytes)
        assert fused_by_blas(FUSED_MAX_BATCH_BIG_WEIGHTS + 1, w_bytes) == big
        assert fused_by_blas(FUSED_MAX_BATCH, w_bytes) == big
        assert fused_by_blas(FUSED_MAX_BATCH + 1, w_bytes)
    # and training across the switch agrees with the reference
    rng = np.random.default_rng(3)
    x = rng.normal(size=(FUSED_MAX_BATCH, side)).astype(np.float32)
    y = rng.integers(0, 3, FUSED_MAX_BATCH)
    nets = [fn.NeuralNetwork([fn.DenseLayer("relu", side, neurons_num=side, rng=0),
                              fn.DenseLayer("identity", neurons_num=3, rng=1)],
                             "softmax_xent", fn.SGD(0.05), backend=b) for b in ("numpy", "numba")]
    for batch in (FUSED_MAX_BATCH_BIG_WEIGHTS, FUSED_MAX_BATCH_BIG_WEIGHTS + 1, FUSED_MAX_BATCH):
        losses = [net.train_step(x[:batch], y[:batch]) for net in nets]
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    for got, want in zip(nets[1].parameters(), nets[0].parameters(), strict=True):
        _close(got, want, 1e-5)


# -- the plan itself: the compiled step reads its arrays by address --------------------------
def _plan_arrays(batch, dtype=np.float32, sizes=(8, 16, 4), momentum=False, empty=None, seed=0):
    """The arguments of ``fused_plan`` for a ReLU-identity stack; ``empty(p)``
    makes the empty velocities (default: new (0, 0) arrays)."""
    rng = np.random.default_rng(seed)
    ws = [rng.normal(size=(a, b)).astype(dtype) / 3 for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [np.zeros((1, b), dtype) for b in sizes[1:]]
    empty = empty or (lambda p: np.zeros((0, 0), dtype))
    vws = [np.zeros_like(w) if momentum else empty(w) for w in ws]
    vbs = [np.zeros_like(b) if momentum else empty(b) for b in bs]
    work = [[np.empty((batch, b), dtype) for b in sizes[1:]] for _ in range(3)]
    return ws, bs, vws, vbs, [ACTIVATIONS.index("relu"), 0], [0.0, 0.0], *work


def _step_data(batch, dtype=np.float32, seed=1):
    rng = np.random.default_rng(seed)
    x, t = rng.normal(size=(batch, 8)).astype(dtype), np.zeros((batch, 4), dtype)
    t[np.arange(batch), rng.integers(0, 4, batch)] = 1
    return x, t


COPIED_PLAN = """
import copy, pickle, sys
import numpy as np
from fastnet.kernels import numba as jit
from fastnet.kernels import numpy as ref
import test_fused_step as t

how = sys.argv[1]
x, tt = t._step_data(3)
arrays = t._plan_arrays(3, momentum=True)
plan = jit.fused_plan(*arrays)
jit.fused_sgd_step(x, tt, plan, 1, 0.1, 0.0, 0.0, False, np.zeros((2, 2)))
copies = {"deepcopy": copy.deepcopy, "pickle": lambda p: pickle.loads(pickle.dumps(p)), "copy": copy.copy}
twin = copies[how](plan)
before = [w.copy() for w in arrays[0]]
want = ref.fused_plan(*(copy.deepcopy(a) for a in arrays))  # the reference, from the same state
bounds = np.zeros((2, 2))
loss = jit.fused_sgd_step(x, tt, twin, 1, 0.1, 0.9, 0.0, False, bounds)  # with momentum: other kernels
assert np.isclose(loss, ref.fused_sgd_step(x, tt, want, 1, 0.1, 0.9, 0.0, False, np.zeros((2, 2))), rtol=1e-5)
stepped = [layer[0] for layer in twin.arrays]  # each layer's w
for got, w_ref in zip(stepped, want.ws, strict=True):
    t._close(got, w_ref, t.STEP_TOL[np.float32])
if how == "copy":  # a shallow copy shares the arrays, as the reference's namedtuple does
    assert all(a is b for a, b in zip(stepped, arrays[0], strict=True))
else:  # the copy stepped its own arrays; the original's are as they were
    assert all(a is not b for a, b in zip(stepped, arrays[0], strict=True))
    for w, w0 in zip(arrays[0], before, strict=True):
        np.testing.assert_array_equal(w, w0)
print("ok")
"""


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "copy"])
def test_a_copied_or_pickled_plan_is_a_new_plan_of_its_own_arrays(how):
    """A plan's table holds addresses: a copy must not step the original's arrays
    (nor another process's), and must compile what it steps (a momentum step on
    a copy of a plain plan once called an address never filled in: a segfault,
    so this runs in a process of its own)."""
    _run_alone(COPIED_PLAN, how)


def _run_alone(script, *args):
    """Run ``script`` (which imports this module) in a new Python process: it must print "ok"."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get(
        "PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-3000:])


NESTEROV_WITHOUT_MOMENTUM = """
import copy
import numpy as np
from fastnet.kernels import numba as jit
from fastnet.kernels import numpy as ref
import test_fused_step as t

x, tt = t._step_data(33)
arrays = t._plan_arrays(33)
want = ref.fused_plan(*copy.deepcopy(arrays))
plan = jit.fused_plan(*arrays)
loss = jit.fused_sgd_step(x, tt, plan, 1, 0.1, 0.0, 1e-3, True, np.zeros((2, 2)))
assert np.isclose(loss, ref.fused_sgd_step(x, tt, want, 1, 0.1, 0.0, 1e-3, True, np.zeros((2, 2))), rtol=1e-5)
for (w, *_), w_ref in zip(plan.arrays, want.ws, strict=True):
    t._close(w, w_ref, t.STEP_TOL[np.float32])
print("ok")
"""


def test_weight_decay_by_blas_with_a_nesterov_flag_and_no_momentum():
    """Plain SGD with weight decay by BLAS updates by ``?axpy`` whatever the
    nesterov flag (which, with no momentum, changes nothing): the step must have
    made that kernel ready for it (it once called an address never filled in,
    so this runs in a process of its own, where no other test compiled it)."""
    _run_alone(NESTEROV_WITHOUT_MOMENTUM)


def test_a_plan_refuses_an_empty_batch():
    from fastnet.kernels import numba as jit

    with pytest.raises(ValueError, match="at least one row, got 0"):
        jit.fused_plan(*_plan_arrays(0))


@pytest.mark.skipif(numba_config.DISABLE_JIT, reason="as Python the step takes any array NumPy takes")
def test_a_step_refuses_arrays_numba_would_type_apart():
    from fastnet.kernels import numba as jit

    plan = jit.fused_plan(*_plan_arrays(2))
    x, t = _step_data(2)
    wide = np.repeat(x, 2, axis=1)[:, ::2]  # the right shape, but not contiguous
    with pytest.raises(ValueError, match="x must be a C-contiguous, writeable, aligned array"):
        jit.fused_sgd_step(wide, t, plan, 1, 0.1, 0.0, 0.0, False, np.zeros((2, 2)))
    t.setflags(write=False)
    with pytest.raises(ValueError, match="t must be a C-contiguous, writeable, aligned array"):
        jit.fused_sgd_step(x, t, plan, 1, 0.1, 0.0, 0.0, False, np.zeros((2, 2)))


def test_empty_velocities_that_start_where_their_parameter_does():
    """``w[:0]`` (an empty velocity made from w) shares w's address;
    as Python (NUMBA_DISABLE_JIT) the plan once looked arrays up by address."""
    from fastnet.kernels import numba as jit
    from fastnet.kernels import numpy as ref

    x, t = _step_data(3)
    arrays = _plan_arrays(3, empty=lambda p: p[:0])
    want = ref.fused_sgd_step(x, t, ref.fused_plan(*_plan_arrays(3)), 1, 0.1, 0.0, 0.0, False,
                              np.zeros((2, 2)))
    got = jit.fused_sgd_step(x, t, jit.fused_plan(*arrays), 1, 0.1, 0.0, 0.0, False, np.zeros((2, 2)))
    assert np.isclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_fused_gradients_agree_and_change_no_parameter(activation, dtype):
    """The gradients alone (distributed training's first half), scaled, into a
    flat buffer in parameter order: the compiled twin against the reference,
    and the reference against the layered passes' dw and db, at the tiles'
    batches and BLAS's; the parameters untouched, nothing written past them.
    Tolerance: one step's (module docstring)."""
    from fastnet.kernels import numba as kj
    from fastnet.kernels import numpy as kr

    tol = STEP_TOL[dtype]
    for batch in (1, 3, 7, FUSED_MAX_BATCH, FUSED_MAX_BATCH + 1, 64):
        net = _wide_pair((activation, activation), lambda: fn.SGD(0.1), dtype)[0]  # the NumPy one
        rng = np.random.default_rng(batch)
        x = rng.normal(size=(batch, WIDE[0])).astype(dtype)
        t = np.eye(WIDE[3], dtype=dtype)[rng.integers(0, WIDE[3], batch)]
        net.backward(net.loss.grad(net.forward(x), t))  # the layered passes
        layered = np.concatenate([g.reshape(-1) for g in net.gradients()])
        got = {}
        for k in (kr, kj):
            ws, bs = [la.w.copy() for la in net.layers], [la.b.copy() for la in net.layers]
            plan = k.fused_plan(ws, bs, [np.zeros((0, 0), dtype)] * 3, [np.zeros((0, 0), dtype)] * 3,
                                [ACTIVATIONS.index(activation)] * 2 + [0], [0.0] * 3,
                                *[[np.empty((batch, n), dtype) for n in WIDE[1:]] for _ in range(3)])
            grads = np.full(layered.size + 2, np.nan, dtype)
            assert np.isfinite(k.fused_gradients(x, t, plan, 1, 0.25, grads))
            assert np.isnan(grads[-2:]).all()  # nothing written past the parameters
            for p, la in zip(ws + bs, net.layers + net.layers, strict=True):
                np.testing.assert_array_equal(p, la.w if p.shape == la.w.shape else la.b)
            got[k] = grads[:-2]
        _close(got[kj], got[kr], tol)
        _close(got[kr], 0.25 * layered, tol)

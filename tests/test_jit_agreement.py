"""The JIT path agrees with the NumPy reference: kernel by kernel and over training.

Tolerances, from the arithmetic.  The two paths sum in different orders (BLAS
blocks, compiled loops) and use different libm implementations, so they are
compared with

    |jit - ref| <= RTOL * |ref| + ATOL * S

where S is the magnitude of the values: for a matrix product the same product
on absolute values (the sum of |terms|, which bounds the rounding error of
any summation order as (a small multiple of) n * eps * S, typically sqrt(n) *
eps * S), and for elementwise results the largest |ref| of the array.
float32: RTOL = 1e-5 (~84 ulp, several ulp per libm call) and ATOL = 1e-6
(~8 eps of S).  float64: 1e-12 for both (still thousands of ulp at 2.2e-16).
"""

import inspect
import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnet as fn
from fastnet import backend as fb
from fastnet.kernels import ACTIVATIONS, LOSSES
from fastnet.kernels import numpy as R

pytest.importorskip("numba")
from fastnet.kernels import numba as J  # noqa: E402
from fastnet.kernels.numba import cpu, dense, tuning, updates  # noqa: E402

TOL = {np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-12)}
# batch sizes on both sides of every threshold of the JIT dispatch, and weights
# sizes in each band of the threshold tables
_TABLES = (tuning.DW_LOOPS_MAX_BATCH, tuning.DW_TILES_MAX_BATCH, tuning.DX_LOOPS_MAX_BATCH,
           tuning.FWD_LOOPS_MAX_BATCH)
_LIMITS = sorted({limit for table in _TABLES for limit, _ in table if limit != math.inf})
THRESHOLD_BATCHES = sorted({1, 2, tuning.DX_LOOPS_MIN_BATCH - 1, tuning.DX_LOOPS_MIN_BATCH,
                            tuning.FWD_LOOPS_MIN_BATCH - 1, tuning.FWD_LOOPS_MIN_BATCH}
                           | {b + d for table in _TABLES for _, b in table for d in (0, 1)} - {0})
# one weights size inside each band (a single band when no table has a limit)
WEIGHT_BYTES = ([3 * limit // 4 for limit in _LIMITS] + [3 * _LIMITS[-1] // 2] if _LIMITS
                else [1 << 18])
SMALL = max(b for _, b in tuning.DX_LOOPS_MAX_BATCH)
ALPHA = {"leaky_relu": 0.05, "elu": 0.7}


def assert_agree(got, ref, dtype, scale=None, what=""):
    rtol, atol = TOL[dtype]
    assert got.dtype == ref.dtype == np.dtype(dtype), what
    if scale is None:
        scale = np.max(np.abs(ref)) if ref.size else 0.0
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    bound = rtol * np.abs(ref.astype(np.float64)) + atol * np.asarray(scale, dtype=np.float64)
    worst = np.argmax(err - bound) if err.size else 0
    assert np.all(err <= bound), (
        f"{what}: max excess at {np.unravel_index(worst, err.shape)}: "
        f"err {err.flat[worst]:.3g} > bound {bound.flat[worst] if bound.ndim else bound:.3g}"
    )


def test_same_names_and_signatures():
    """The twin packages: the same public kernels (``__all__``), module by module,
    each with the same parameters and defaults, and each module names its twin."""
    import importlib

    assert len(R.__all__) >= 17 and sorted(R.__all__) == R.__all__
    assert J.__all__ == R.__all__
    for name in R.__all__:
        ref, jit = getattr(R, name), getattr(J, name)
        assert inspect.signature(getattr(jit, "py_func", jit)) == inspect.signature(ref), name
        # the same module on both sides: activations, dense, losses, optimizers, fused or epoch
        assert ref.__module__.rsplit(".", 1)[1] == getattr(jit, "py_func", jit).__module__.rsplit(".", 1)[1]
    for module in ("activations", "dense", "losses", "optimizers", "fused", "epoch"):
        ref = importlib.import_module(f"fastnet.kernels.numpy.{module}")
        jit = importlib.import_module(f"fastnet.kernels.numba.{module}")
        assert jit.__all__ == ref.__all__, module
        assert f"twin: ``fastnet.kernels.numba.{module}``" in ref.__doc__.split("\n\n")[0].replace("\n", " ")
        assert f"twin: ``fastnet.kernels.numpy.{module}``" in jit.__doc__.split("\n\n")[0].replace("\n", " ")


def _dense_case(rng, batch, n_in, n_out, dtype, scale_x=1.0):
    x = (rng.normal(size=(batch, n_in)) * scale_x).astype(dtype)
    w = (rng.normal(size=(n_in, n_out)) / math.sqrt(n_in)).astype(dtype)
    b = rng.normal(size=(1, n_out)).astype(dtype)
    dy = rng.normal(size=(batch, n_out)).astype(dtype)
    return x, w, b, dy


def check_dense(x, w, b, dy, name, dtype):
    """Forward and backward of both kernel modules on the same inputs, stage by stage."""
    kind, alpha = ACTIVATIONS.index(name), ALPHA.get(name, 0.0)
    batch, n_out = x.shape[0], w.shape[1]
    new = lambda *shape: np.full(shape, np.nan, dtype)  # noqa: E731 - unwritten entries show up
    a_r, y_r, a_j, y_j = (new(batch, n_out) for _ in range(4))
    R.dense_forward(x, w, b, kind, alpha, a_r, y_r)
    J.dense_forward(x, w, b, kind, alpha, a_j, y_j)
    assert_agree(a_j, a_r, dtype, np.abs(x) @ np.abs(w) + np.abs(b), f"{name} a")
    # y from the same a on both sides, so only the activation itself is compared
    assert_agree(y_j, R.activation_forward(kind, alpha, a_j, new(batch, n_out)), dtype,
                 what=f"{name} y")

    dz_r, dz_j = new(batch, n_out), new(batch, n_out)
    dw_r, dw_j = new(*w.shape), new(*w.shape)
    db_r, db_j = new(*b.shape), new(*b.shape)
    dx_r, dx_j = new(*x.shape), new(*x.shape)
    R.dense_backward(x, a_j, y_j, dy, kind, alpha, dz_r, dw_r, db_r)
    J.dense_backward(x, a_j, y_j, dy, kind, alpha, dz_j, dw_j, db_j)
    assert_agree(dz_j, dz_r, dtype, what=f"{name} dz")
    # dz itself is only known to ATOL * max|dz| (above); that carries into dw and db
    abs_dz = np.abs(dz_r) + np.abs(dz_r).max()
    assert_agree(dw_j, dw_r, dtype, np.abs(x).T @ abs_dz / batch, f"{name} dw")
    assert_agree(db_j, db_r, dtype, abs_dz.mean(axis=0, keepdims=True), f"{name} db")
    R.input_grad(dz_r, w, dx_r)
    J.input_grad(dz_r, w, dx_j)
    assert_agree(dx_j, dx_r, dtype, abs_dz @ np.abs(w).T, f"{name} dx")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_and_one_hot_agrees(dtype):
    """Same verdicts (x's largest magnitude, or -1) and bitwise the same one-hot
    rows; a refusal leaves t as it was."""
    rng = np.random.default_rng(5)
    for case in range(300):
        batch, n, classes = int(rng.integers(1, 18)), int(rng.integers(1, 40)), int(rng.integers(1, 12))
        x = rng.normal(size=(batch, n)).astype(dtype)
        labels = rng.integers(0, classes, batch)
        if rng.random() < 0.3:  # a bad value somewhere in x
            x.flat[rng.integers(0, x.size)] = rng.choice([np.nan, np.inf, -np.inf])
        if rng.random() < 0.3:  # a label out of range, either side, the edge included
            labels[rng.integers(0, batch)] = rng.choice([-1, classes, classes + 7])
        expect = bool(np.isfinite(x).all() and labels.min() >= 0 and labels.max() < classes)
        for mod in (R, J):
            t = np.full((batch, classes), 7.0, dtype)
            got = mod.check_and_one_hot(x, labels, t)
            assert got == (float(np.abs(x).max()) if expect else -1.0), f"{mod.__name__} case {case}"
            want = np.eye(classes, dtype=dtype)[labels] if expect else np.full((batch, classes), 7.0, dtype)
            np.testing.assert_array_equal(t, want, err_msg=f"{mod.__name__} case {case}")


DTYPES = [np.float32, np.float64]
# B on both sides of the small-batch threshold; odd widths
BATCHES = THRESHOLD_BATCHES + [64]
WIDTHS = [(1, 1), (3, 17), (17, 3), (257, 17), (17, 257)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("batch", BATCHES)
def test_dense_agrees(dtype, name, batch):
    rng = np.random.default_rng(batch)
    for n_in, n_out in WIDTHS:
        check_dense(*_dense_case(rng, batch, n_in, n_out, dtype), name, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", THRESHOLD_BATCHES)
@pytest.mark.parametrize("w_bytes", WEIGHT_BYTES)
def test_dense_agrees_with_big_weights(dtype, batch, w_bytes):
    """Each band of weights sizes takes its own thresholds."""
    n = int(np.sqrt(w_bytes / np.dtype(dtype).itemsize))
    rng = np.random.default_rng(batch)
    check_dense(*_dense_case(rng, batch, n, n, dtype), "relu", dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("batch", [1, SMALL + 3])
def test_dense_agrees_on_huge_and_tiny_preactivations(dtype, name, batch):
    rng = np.random.default_rng(7)
    for scale_x in (1e4, 1e-20):
        check_dense(*_dense_case(rng, batch, 5, 4, dtype, scale_x), name, dtype)


EXTREMES = [-1e30, -1e4, -100.0, -30.0, -1.0, -1e-20, 0.0, 1e-20, 1.0, 30.0, 100.0, 1e4, 1e30]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_kernels_agree_on_extremes(dtype, name):
    kind, alpha = ACTIVATIONS.index(name), ALPHA.get(name, 0.0)
    a = np.array([EXTREMES, np.linspace(-8, 8, len(EXTREMES))], dtype=dtype)
    dy = np.ones_like(a)
    for fname in ("activation_forward", "activation_derivative"):
        got = getattr(J, fname)(kind, alpha, a, np.empty_like(a))
        ref = getattr(R, fname)(kind, alpha, a, np.empty_like(a))
        assert np.all(np.isfinite(got)), fname
        assert_agree(got, ref, dtype, what=f"{name} {fname}")
    y = R.activation_forward(kind, alpha, a, np.empty_like(a))
    assert_agree(J.activation_grad(kind, alpha, a, y, dy, np.empty_like(a)),
                 R.activation_grad(kind, alpha, a, y, dy, np.empty_like(a)), dtype,
                 what=f"{name} activation_grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_in_place_activation_gradients_equal_the_two_array_kernels(dtype, name):
    """The fused step's gradient kernels (``BACKWARD_IN_PLACE``: dz is dy, one
    pointer) give the same bits as ``BACKWARD``'s on separate arrays, with
    and without the bias gradient: the same operations on each element (only
    vectorised), and db summed over the rows in the same order.  Rows of 37:
    vector bodies and scalar remainders both."""
    from fastnet.kernels.numba.activations import BACKWARD, BACKWARD_IN_PLACE

    kind, alpha = ACTIVATIONS.index(name), ALPHA.get(name, 0.0)
    rng = np.random.default_rng(kind)
    a = (rng.normal(size=(11, 37)) * 3).astype(dtype)
    a[0, :len(EXTREMES)] = EXTREMES
    y = R.activation_forward(kind, alpha, a, np.empty_like(a))
    dy = rng.normal(size=a.shape).astype(dtype)
    for with_db in (False, True):
        dz, db = np.empty_like(a), np.full((1, a.shape[1]), np.nan, dtype)
        BACKWARD[kind](alpha, a, y, dy, dz, db, with_db)
        g, db_in_place = dy.copy(), np.full_like(db, np.nan)
        BACKWARD_IN_PLACE[kind](alpha, a, y, g, g, db_in_place, with_db)
        np.testing.assert_array_equal(g, dz, err_msg=f"{name}, with_db={with_db}")
        np.testing.assert_array_equal(db_in_place, db, err_msg=f"{name}, with_db={with_db}")
        assert np.all(np.isfinite(dz)) and (np.all(np.isfinite(db)) == with_db)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("batch", [1, 5, 64])
def test_loss_kernels_agree(dtype, loss, batch):
    rng = np.random.default_rng(batch)
    kind = LOSSES.index(loss)
    for scale in (1.0, 1e3):
        z = (rng.normal(size=(batch, 7)) * scale).astype(dtype)
        t = np.zeros_like(z)
        t[np.arange(batch), rng.integers(0, 7, batch)] = 1
        v_r = R.loss_value(kind, z, t)
        # the loss is a reduction of B*C terms; compare it to the sum of their sizes
        rtol, atol = TOL[dtype]
        g_r = R.loss_grad(kind, z, t, np.empty_like(z))
        g_j = np.full_like(z, np.nan)  # every entry must be written
        both = J.loss_and_grad(kind, z, t, g_j)
        for v_j in (J.loss_value(kind, z, t), both, R.loss_and_grad(kind, z, t, np.empty_like(z))):
            assert abs(float(v_j) - float(v_r)) <= rtol * abs(float(v_r)) + atol * (
                np.abs(z).mean() + abs(float(v_r)))
        assert_agree(g_j, g_r, dtype, what=f"{loss} grad of loss_and_grad")
        assert_agree(J.loss_grad(kind, z, t, np.empty_like(z)), g_r, dtype, what=f"{loss} grad")
    assert_agree(J.softmax(z, np.empty_like(z)), R.softmax(z, np.empty_like(z)), dtype, what="softmax")


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_kernels_agree(dtype):
    rng = np.random.default_rng(3)
    shape = (13, 7)
    for momentum, nesterov, wd in ((0.0, False, 0.0), (0.9, False, 0.01), (0.9, True, 0.0)):
        p = rng.normal(size=shape).astype(dtype)
        v = rng.normal(size=shape).astype(dtype) if momentum else np.zeros((0, 0), dtype)
        g = rng.normal(size=shape).astype(dtype)
        p_r, v_r, p_j, v_j = p.copy(), v.copy(), p.copy(), v.copy()
        R.sgd_step(p_r, g, v_r, 0.1, momentum, wd, nesterov)
        J.sgd_step(p_j, g, v_j, 0.1, momentum, wd, nesterov)
        assert_agree(p_j, p_r, dtype, what="sgd p")
        assert_agree(v_j, v_r, dtype, what="sgd v")
    p, g = rng.normal(size=shape).astype(dtype), rng.normal(size=shape).astype(dtype)
    m, v = rng.normal(size=shape).astype(dtype), rng.random(shape).astype(dtype)
    state_r = [p.copy(), m.copy(), v.copy()]
    state_j = [p.copy(), m.copy(), v.copy()]
    for t in (1, 2, 3):
        R.adam_step(state_r[0], g, state_r[1], state_r[2], 0.01, 0.9, 0.999, 1e-8, 0.01, t)
        J.adam_step(state_j[0], g, state_j[1], state_j[2], 0.01, 0.9, 0.999, 1e-8, 0.01, t)
    for got, ref in zip(state_j, state_r, strict=True):
        assert_agree(got, ref, dtype, what="adam")
    acc_r = rng.normal(size=shape).astype(dtype)
    acc_j = acc_r.copy()
    R.running_mean(acc_r, g, 0.3)
    J.running_mean(acc_j, g, 0.3)
    assert_agree(acc_j, acc_r, dtype, what="running_mean")


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 3 * SMALL), n_in=st.integers(1, 40), n_out=st.integers(1, 40),
       dtype=st.sampled_from(DTYPES), name=st.sampled_from(ACTIVATIONS),
       scale=st.sampled_from([1e-3, 1.0, 30.0]), seed=st.integers(0, 2**16))
def test_dense_agrees_hypothesis(batch, n_in, n_out, dtype, name, scale, seed):
    rng = np.random.default_rng(seed)
    check_dense(*_dense_case(rng, batch, n_in, n_out, dtype, scale), name, dtype)


# -- through the layer and network API -------------------------------------------------
def _net(backend, dtype, optimizer, loss="softmax_xent", acts=("tanh", "relu")):
    layers = [fn.DenseLayer(acts[0], 11, neurons_num=9, dtype=dtype, rng=1)]
    layers += [fn.DenseLayer(a, neurons_num=8, dtype=dtype, rng=2 + i) for i, a in enumerate(acts[1:])]
    layers.append(fn.DenseLayer("identity", neurons_num=4, dtype=dtype, rng=9))
    return fn.NeuralNetwork(layers, loss, optimizer, backend=backend)


@pytest.mark.parametrize("order", ["F", "noncontiguous"])
@pytest.mark.parametrize("batch", [1, SMALL + 5])
def test_fortran_and_noncontiguous_inputs(order, batch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 11)).astype(np.float32)
    odd = np.asfortranarray(x) if order == "F" else np.repeat(x, 2, axis=1)[:, ::2]
    assert not odd.flags.c_contiguous or (order == "F" and batch == 1)  # one row is both
    ref = _net("numpy", np.float32, fn.SGD(0.1)).forward(x).copy()
    jit = _net("numba", np.float32, fn.SGD(0.1))
    assert np.array_equal(jit.forward(odd), jit.forward(x))
    assert_agree(jit.forward(odd).copy(), ref, np.float32, what="forward")


# Training: differences of one step (bounded above) are carried into the next.
# With small learning rates the maps are close to contractions, so after N
# steps the gap stays within about N times the per-step bound: 50 steps of
# float32 -> 50 * 1e-5 relative; float64 -> 50 * 1e-12.
TRAIN_TOL = {np.float32: 5e-4, np.float64: 5e-11}


def _train_pair(dtype, make_opt, run):
    nets = {b: _net(b, dtype, make_opt(), acts=("tanh", "gelu")) for b in ("numpy", "numba")}
    rng = np.random.default_rng(5)
    X = rng.normal(size=(70, 11)).astype(dtype)
    y = rng.integers(0, 4, size=70)
    losses = {b: run(net, X, y) for b, net in nets.items()}
    return nets, losses


def _compare_training(nets, losses, dtype):
    tol = TRAIN_TOL[dtype]
    np.testing.assert_allclose(losses["numba"], losses["numpy"], rtol=tol, atol=tol)
    for p_j, p_r in zip(nets["numba"].parameters(), nets["numpy"].parameters(), strict=True):
        assert p_j.dtype == p_r.dtype == np.dtype(dtype)
        np.testing.assert_allclose(p_j, p_r, rtol=tol, atol=tol * np.abs(p_r).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_fifty_sgd_steps_agree(dtype):
    def run(net, X, y):  # batches of 1 to 24 rows: both sides of the small-batch threshold
        spans = [((7 * s) % 46, (7 * s) % 46 + 1 + s % 24) for s in range(50)]
        return [net.train_step(X[i:j], y[i:j]) for i, j in spans]
    _compare_training(*_train_pair(dtype, lambda: fn.SGD(0.05, momentum=0.9, nesterov=True), run), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_full_batch_gd_agrees(dtype):
    def run(net, X, y):
        return net.fit(X, y, epochs=5, batch_size=SMALL + 4, mode="gd", progress=False, rng=0)["loss"]
    _compare_training(*_train_pair(dtype, lambda: fn.SGD(0.2), run), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_training_agrees(dtype):
    def run(net, X, y):
        return net.fit(X, y, epochs=3, batch_size=8, progress=False, rng=0)["loss"]
    _compare_training(*_train_pair(dtype, lambda: fn.Adam(0.003), run), dtype)


# -- numba missing ------------------------------------------------------------------------
def _hide_numba(monkeypatch):
    """Make "import numba" raise ImportError, and forget the compiled kernels' modules."""
    monkeypatch.setitem(sys.modules, "numba", None)
    for name in [m for m in sys.modules if m.split(".")[:3] == ["fastnet", "kernels", "numba"]]:
        monkeypatch.delitem(sys.modules, name)
    fb._forget_numba()


def test_auto_falls_back_when_numba_is_missing(monkeypatch):
    _hide_numba(monkeypatch)
    try:
        assert fb.available_backends() == ("numpy",)
        assert fb.resolve_backend("auto") == "numpy"
        assert fn.DenseLayer("relu", 3, neurons_num=2).backend == "numpy"
        with pytest.raises(ImportError, match="pip install"):
            fb.resolve_backend("numba")
        with pytest.raises(ImportError, match="numba"):
            fn.DenseLayer("relu", 3, neurons_num=2, backend="numba")
    finally:
        fb._forget_numba()
    monkeypatch.undo()
    assert "numba" in fb.available_backends()


def test_a_numba_network_unpickled_without_numba_computes_with_numpy(monkeypatch):
    import pickle

    net = fn.NeuralNetwork([fn.DenseLayer("relu", 4, neurons_num=3, rng=0)], "mse", backend="numba")
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    want = net.predict(x).copy()
    data = pickle.dumps(net)
    _hide_numba(monkeypatch)
    try:
        with pytest.warns(RuntimeWarning, match="'numba' backend, which is not available here"):
            twin = pickle.loads(data)
        assert twin.backend == "numpy" and twin.layers[0].backend == "numpy"
        np.testing.assert_allclose(twin.predict(x), want, rtol=1e-6)  # a few float32 operations
    finally:
        fb._forget_numba()
    monkeypatch.undo()


# -- the small-batch loop kernels themselves, whatever the thresholds ------------------
# The threshold tables differ between machine classes (``fastnet.kernels.numba.tuning``),
# so the dispatch tests above reach different loop batches on different machines; here
# every loop kernel runs at every batch either table gives to it, and on either side.
LOOP_BATCHES = range(1, 14)
# partial panels, scalar columns, n_in % 4 != 0; rows of 2 KiB multiples (the tiled
# update's padded copies of x, and of g with w walked row by row)
LOOP_SHAPES = [(37, 70), (9, 203), (70, 9), (512, 9), (9, 512)]


def _loop_case(rng, batch, n_in, n_out, dtype):
    x, w, b, dz = _dense_case(rng, batch, n_in, n_out, dtype)
    return x, w, b, dz, x.astype(np.float64), dz.astype(np.float64)


def _forward_by_loops(x, w, b, a):
    """a = x @ w + b by the register tiles (rows by four) and the sweeping loops."""
    if x.shape[0] >= 4:
        dense.forward_tiles(x, w, b, a)
    if x.shape[0] % 4:
        dense.FORWARD_ROWS[dense.forward_rows_code(x.shape[0])](x, w, b, a)


def _scratch(x, g, dtype):
    n = max(5 * g.shape[1], dense.padded_size(*x.shape, g.shape[1], np.dtype(dtype).itemsize))
    return np.full(n, np.nan, dtype)  # what the kernels read of it, they wrote first


def _step_on_zero_weights(x, dz, update, dtype):
    """-(x.T @ dz / B) from one SGD step of lr 1 on zero weights (and zero velocity),
    by ``update``: "tiled", "tiled-unaliased" (rows that do not alias only), "rows"
    or "momentum"."""
    T = np.dtype(dtype).type
    w = np.zeros((x.shape[1], dz.shape[1]), dtype)
    scratch = _scratch(x, dz, dtype)
    if update == "tiled":
        dense.update_tiled(x, dz, w, T(1), scratch)
    elif update == "tiled-unaliased":
        dense.update_tiled_unaliased(x, dz, w, T(1), scratch)
    elif update == "rows":
        updates.UPDATE_ROWS_PLAIN[updates.rows_code(x.shape[0])](x, dz, w, T(1), T(0), scratch)
    else:
        update = updates.UPDATE_ROWS_MOMENTUM[updates.rows_code(x.shape[0])]
        update(x, dz, w, np.zeros_like(w), T(1), T(0.9), T(0), False, scratch)
    return w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", LOOP_BATCHES)
def test_loop_kernels_agree_at_every_small_batch(dtype, batch):
    rng = np.random.default_rng(batch)
    for n_in, n_out in LOOP_SHAPES:
        x, w, b, dz, x64, dz64 = _loop_case(rng, batch, n_in, n_out, dtype)
        a = np.full((batch, n_out), np.nan, dtype)
        _forward_by_loops(x, w, b, a)
        ref = x64 @ w + b
        assert_agree(a, ref.astype(dtype), dtype, np.abs(x) @ np.abs(w) + np.abs(b), "forward a")
        dw_ref = x64.T @ dz64 / batch
        scale = np.abs(x).T @ np.abs(dz) / batch
        for name, kernel in (("loops", dense.weight_grad_small), ("tiles", dense.weight_grad_tiled)):
            dw = np.full_like(w, np.nan)  # every entry must be written
            kernel(x, dz, dw)
            assert_agree(dw, dw_ref.astype(dtype), dtype, scale, f"dw {name}")
        dx = np.full_like(x, np.nan)
        dense.INPUT_GRAD_SMALL[dense.input_grad_code(batch)](dz, w, dx)
        assert_agree(dx, (dz64 @ w.T).astype(dtype), dtype, np.abs(dz) @ np.abs(w).T, "dx loops")
        aliased = dense.rows_alias(n_in, n_out, x.itemsize)
        for update in ("tiled", "rows", "momentum") + (() if aliased else ("tiled-unaliased",)):
            # momentum 0.9 from zero velocity: v = dw
            got = _step_on_zero_weights(x, dz, update, dtype)
            assert_agree(got, (-dw_ref).astype(dtype), dtype, scale, f"update {update}")


WIDE_TILES = """
import numpy as np
from fastnet.kernels.numba import cpu, dense
cpu.VEC_BYTES = 64  # before anything compiles (fresh cache): the tiles of the AVX-512 machines
import test_jit_agreement as t
for batch in (4, 5, 8, 13):
    rng = np.random.default_rng(batch)
    for n_in, n_out in t.LOOP_SHAPES + [(20, 97)]:
        x, w, b, dz, x64, dz64 = t._loop_case(rng, batch, n_in, n_out, np.float32)
        a = np.empty((batch, n_out), np.float32)
        t._forward_by_loops(x, w, b, a)
        t.assert_agree(a, (x64 @ w + b).astype(np.float32), np.float32,
                       np.abs(x) @ np.abs(w) + np.abs(b), "forward a")
        got = t._step_on_zero_weights(x, dz, "tiled", np.float32)
        t.assert_agree(got, (-(x64.T @ dz64) / batch).astype(np.float32), np.float32,
                       np.abs(x).T @ np.abs(dz) / batch, "update")
print("ok")
"""


@pytest.mark.skipif(cpu.WIDE_VECTORS, reason="these tiles already run in this process")
def test_512_bit_tiles_agree(tmp_path):
    """The 64-byte tiles (16 float32 lanes, 48-column panels) of the Sapphire/Emerald/
    Granite Rapids machines, compiled here too: LLVM splits their vectors for AVX2."""
    import os
    import subprocess

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), PYTHONPATH=os.path.dirname(__file__))
    done = subprocess.run([sys.executable, "-c", WIDE_TILES], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]

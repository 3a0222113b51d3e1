"""The fused step on two threads (``net.fused_threads = 2``) agrees with the
layered reference, and falls back to one thread, changing nothing, whenever it
cannot run.

Tolerances as in ``test_fused_step``: the two threads add the same products in
other orders (each thread's part of dz @ w.T, then their sum), which is float
rounding, |d| <= 1e-5 |ref| + 1e-6 max|ref| per float32 step, 1e-12 in float64.
"""

import warnings

import numpy as np
import pytest

import fastnet as fn
from fastnet.network import FUSED_2T_MIN_BATCH, FUSED_MAX_BATCH

numba = pytest.importorskip("numba")
from test_fused_step import LOSSES, STEP_TOL, _close, _data  # noqa: E402

from fastnet.kernels import _numba as J  # noqa: E402
from fastnet.kernels import _numpy as R  # noqa: E402

pytestmark = pytest.mark.skipif(not J.TWO_THREADS or numba.config.NUMBA_NUM_THREADS < 2,
                                reason="needs compiled kernels and two numba threads")
# widths: 40 and 33 outputs split between the threads at 16 (a cache line of
# float32, two of float64), so each thread has full tiles, partial tiles and
# scalar columns; the 3 outputs are all thread 0's
WIDTHS = (6, 40, 33, 3)


def _pair(activation, loss, dtype, lr=0.05):
    nets = []
    for backend in ("numpy", "numba"):
        layers = [fn.DenseLayer(activation, WIDTHS[0], neurons_num=WIDTHS[1], dtype=dtype, rng=1),
                  fn.DenseLayer(activation, neurons_num=WIDTHS[2], dtype=dtype, rng=2),
                  fn.DenseLayer(LOSSES[loss], neurons_num=WIDTHS[3], dtype=dtype, rng=3)]
        nets.append(fn.NeuralNetwork(layers, loss, fn.SGD(lr), backend=backend))
    nets[1].fused_threads = 2
    return nets


@pytest.fixture(autouse=True)
def _two_numba_threads():
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    yield
    numba.set_num_threads(before)


BATCHES = sorted({FUSED_2T_MIN_BATCH, 7, 12, FUSED_MAX_BATCH})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid", "elu", "gelu"])
def test_one_step_agrees(activation, loss, dtype):
    for batch in BATCHES:
        ref, jit = _pair(activation, loss, dtype)
        assert jit.plan(batch) == "fused" and jit._two_threads(batch)
        x, y = _data(loss, batch, dtype, seed=batch)
        tol = STEP_TOL[dtype]
        np.testing.assert_allclose(jit.train_step(x, y), ref.train_step(x, y), rtol=tol, atol=tol)
        for got, want in zip(jit.parameters(), ref.parameters(), strict=True):
            _close(got, want, tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_two_hundred_steps_agree(loss, dtype):
    ref, jit = _pair("relu", loss, dtype, lr=0.02)
    for step in range(200):
        x, y = _data(loss, 9, dtype, seed=step)
        got, want = jit.train_step(x, y), ref.train_step(x, y)
        np.testing.assert_allclose(got, want, rtol=200 * STEP_TOL[dtype], atol=200 * STEP_TOL[dtype])
    for got, want in zip(jit.parameters(), ref.parameters(), strict=True):
        _close(got, want, 200 * STEP_TOL[dtype])


def test_which_steps_take_two_threads():
    _, jit = _pair("relu", "mse", np.float32)
    assert jit._two_threads(FUSED_2T_MIN_BATCH) and not jit._two_threads(FUSED_2T_MIN_BATCH - 1)
    jit.fused_threads = 1
    assert not jit._two_threads(FUSED_MAX_BATCH)
    jit.fused_threads = 2
    jit.optimizer.momentum = 0.9
    assert not jit._two_threads(FUSED_MAX_BATCH)
    jit.optimizer.momentum = 0
    numba.set_num_threads(1)
    assert not jit._two_threads(FUSED_MAX_BATCH)
    numba.set_num_threads(2)
    aliasing = fn.NeuralNetwork([fn.DenseLayer("relu", 6, neurons_num=512, rng=0),
                                 fn.DenseLayer("identity", neurons_num=3, rng=1)], "mse", fn.SGD(0.1),
                                backend="numba")
    aliasing.fused_threads = 2
    assert not aliasing._two_threads(FUSED_MAX_BATCH)  # rows of 2 KiB: one thread


@pytest.mark.parametrize("bad", [0, 3, True, 2.0, "2", None])
def test_fused_threads_must_be_one_or_two(bad):
    _, jit = _pair("relu", "mse", np.float32)
    with pytest.raises(ValueError, match="fused_threads must be 1 or 2"):
        jit.fused_threads = bad
    assert jit.fused_threads == 2


def _kernel_args(net, batch, dtype):
    x, y = _data("mse", batch, dtype, seed=0)
    t = net.loss.prepare_targets(y, batch, WIDTHS[-1], dtype)
    ws, bs, _, _, kinds, alphas, as_, ys, gs = net._fused_arrays(batch)
    return (x, t, ws, bs, kinds, alphas, as_, ys, gs, *net._two_thread_arrays(batch), net.loss.code, 0.05)


def test_a_busy_two_thread_step_is_left_to_one_thread():
    _, jit = _pair("relu", "mse", np.float32)
    args = _kernel_args(jit, 8, np.float32)
    before = [p.copy() for p in jit.parameters()]
    with J._two_threads_lock:  # another Python thread is in it
        assert J.fused_sgd_step_2t(*args) is None
    for p, q in zip(jit.parameters(), before, strict=True):
        np.testing.assert_array_equal(p, q)
    assert J.fused_sgd_step_2t(*args) is not None  # and it runs once free
    assert any(not np.array_equal(p, q) for p, q in zip(jit.parameters(), before, strict=True))


def test_halves_run_one_after_the_other_change_nothing(monkeypatch):
    """With one numba thread the two halves run in turn: the first waits in vain
    (about half a second), calls the step off, and nothing is updated."""
    monkeypatch.setattr(J, "TWO_THREADS", True)  # restored afterwards: the failure switches it off
    _, jit = _pair("relu", "mse", np.float32)
    args = _kernel_args(jit, 8, np.float32)
    before = [p.copy() for p in jit.parameters()]
    numba.set_num_threads(1)
    with pytest.warns(RuntimeWarning, match="one thread from now on"):
        assert J.fused_sgd_step_2t(*args) is None
    for p, q in zip(jit.parameters(), before, strict=True):
        np.testing.assert_array_equal(p, q)
    assert not J.TWO_THREADS
    numba.set_num_threads(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert J.fused_sgd_step_2t(*args) is None  # switched off: no second wait, no warning
    x, y = _data("mse", 8, np.float32, seed=0)
    assert np.isfinite(jit.train_step(x, y))  # the network takes one thread instead


def test_the_reference_kernel_is_the_one_thread_step():
    _, jit = _pair("tanh", "mse", np.float64)
    args = _kernel_args(jit, 7, np.float64)
    x, t, ws, bs, kinds, alphas, as_, ys, gs, *scratch, code, lr = args
    copies = [tuple(a.copy() for a in group) for group in (ws, bs, as_, ys, gs)]
    want = R.fused_sgd_step_2t(x, t, *copies[:2], kinds, alphas, *copies[2:], *scratch, code, lr)
    got = J.fused_sgd_step_2t(*args)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    for g, w in zip(ws + bs, copies[0] + copies[1], strict=True):
        _close(g, w, 1e-12)

"""fit's compiled epochs (fastnet.training.loop.compiled_steps, the kernels'
fused_*_epoch) against one call per step: the same batches in the same order
through the same compiled step, so the parameters are equal bit for bit after
every epoch, and so are the histories (the accuracy of the binary loss within
a rounding: the compiled loop counts, NumPy averages then scales)."""

import numpy as np
import pytest

import fastnet as fn
from fastnet.kernels import ACCURACIES
from fastnet.kernels import numpy as ref
from fastnet.training import loop

pytest.importorskip("numba")
from fastnet.kernels import numba as jit  # noqa: E402

LOSSES = {"softmax_xent": "identity", "bce_logits": "identity", "mse": "tanh"}
OPTIMIZERS = {"sgd": lambda: fn.SGD(0.05), "momentum": lambda: fn.SGD(0.05, momentum=0.9),
              "nesterov+decay": lambda: fn.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
              "adam": lambda: fn.Adam(1e-3, weight_decay=1e-4)}


def _net(loss, optimizer, seed=0):
    layers = [fn.DenseLayer("relu", 9, neurons_num=17, rng=seed),
              fn.DenseLayer("tanh", neurons_num=11, rng=seed + 1),
              fn.DenseLayer(LOSSES[loss], neurons_num=3, rng=seed + 2)]
    return fn.NeuralNetwork(layers, loss, OPTIMIZERS[optimizer](), backend="numba")


def _data(loss, n=203, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 9)).astype(np.float32)
    if loss == "softmax_xent":
        return X, rng.integers(0, 3, n)
    if loss == "bce_logits":
        return X, rng.integers(0, 2, (n, 3))
    return X, rng.normal(size=(n, 3)).astype(np.float32)


def _per_step(monkeypatch):
    """fit with one call per step (the loop this replaces)."""
    monkeypatch.setattr(loop, "compiled_steps", lambda *args: None)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("batch", [1, 7, 32, 64, 203, 500])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("loss", list(LOSSES))
def test_compiled_epochs_equal_one_call_per_step(loss, optimizer, batch, shuffle, monkeypatch):
    X, y = _data(loss)
    fast, slow = _net(loss, optimizer), _net(loss, optimizer)
    got = [fast.fit(X, y, epochs=1, batch_size=batch, shuffle=shuffle, progress=False, rng=e)
           for e in range(3)]
    with monkeypatch.context() as m:
        _per_step(m)
        want = [slow.fit(X, y, epochs=1, batch_size=batch, shuffle=shuffle, progress=False, rng=e)
                for e in range(3)]
        for h_got, h_want in zip(got, want, strict=True):  # after every epoch
            assert h_got["loss"] == h_want["loss"]
            if "accuracy" in h_want:
                np.testing.assert_allclose(h_got["accuracy"], h_want["accuracy"], rtol=1e-12)
    for p, q in zip(fast.parameters(), slow.parameters(), strict=True):
        np.testing.assert_array_equal(p, q)
    if optimizer == "adam":
        assert fast.optimizer.state["t"] == slow.optimizer.state["t"] == 3 * -(-X.shape[0] // batch)
    assert all(type(v) is float for h in got for values in h.values() for v in values)


def test_the_compiled_loop_runs_where_it_should(monkeypatch):
    calls = []
    real = jit.fused_sgd_epoch
    monkeypatch.setattr(jit, "fused_sgd_epoch", lambda *args: calls.append(args[4]) or real(*args))
    X, y = _data("softmax_xent")
    _net("softmax_xent", "momentum").fit(X, y, epochs=2, batch_size=32, progress=False, rng=0)
    # every full batch, but the first one of all: it makes the optimizer's state
    assert sum(calls) == 2 * (203 // 32) - 1
    calls.clear()
    net = fn.NeuralNetwork([fn.DenseLayer("relu", 9, neurons_num=4, rng=0),
                            fn.DenseLayer("identity", neurons_num=3, rng=1)], "softmax_xent", fn.SGD(0.1),
                           backend="numpy")
    net.fit(X, y, epochs=1, batch_size=32, progress=False, rng=0)
    assert calls == []  # the NumPy backend: one step at a time


def test_a_refused_step_mid_epoch_is_named_and_changes_nothing(monkeypatch):
    """Row 150 overflows the forward pass: the loop stops before it, the per-step
    path takes it again and raises naming it; everything before it applied."""
    X, y = _data("softmax_xent")
    X[150] = 3e38
    order = np.random.default_rng(0).permutation(X.shape[0])
    step = int(np.nonzero(order == 150)[0][0]) // 16 + 1
    results = []
    for compiled in (True, False):
        net = _net("softmax_xent", "momentum")
        with monkeypatch.context() as m:
            if not compiled:
                _per_step(m)
            with np.errstate(over="ignore", invalid="ignore"), \
                    pytest.raises(FloatingPointError, match=f"at epoch 1, step {step}\\b"):
                net.fit(X, y, epochs=1, batch_size=16, progress=False, rng=0)
        results.append(net.parameters() + list(net.optimizer.state))
    for p, q in zip(*results, strict=True):
        np.testing.assert_array_equal(p, q)


def test_an_interrupted_call_leaves_the_steps_it_applied(monkeypatch):
    """Ctrl-C arrives between compiled calls; here one is made to raise as it
    returns, after applying its steps: Adam's step count says how many."""
    X, y = _data("softmax_xent", n=960)
    calls = {"n": 0}
    real = jit.fused_adam_epoch

    def interrupted(*args):
        result = real(*args)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(jit, "fused_adam_epoch", interrupted)
    net = _net("softmax_xent", "adam")
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=1, batch_size=8, progress=False, rng=0)
    applied = net.optimizer.state["t"]
    assert 1 < applied < 960 // 8
    again = _net("softmax_xent", "adam")  # the same steps, one call each
    order = np.random.default_rng(0).permutation(X.shape[0])
    for j in range(applied):
        rows = order[8 * j:8 * (j + 1)]
        again.train_step(X[rows], y[rows])
    for p, q in zip(net.parameters() + net.optimizer.state["m"],
                    again.parameters() + again.optimizer.state["m"], strict=True):
        np.testing.assert_array_equal(p, q)


def test_the_twins_agree_on_a_chunk():
    """The reference fused_sgd_epoch beside the compiled one: same steps, same
    totals (one step's rounding apart per step: 1e-5 relative in float32)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(100, 6)).astype(np.float32)
    T = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 100)]
    order = rng.permutation(100)
    runs = []
    for k in (ref, jit):
        r = np.random.default_rng(5)
        ws = [(r.normal(size=(6, 8)) / 3).astype(np.float32), (r.normal(size=(8, 4)) / 3).astype(np.float32)]
        bs = [np.zeros((1, 8), np.float32), np.zeros((1, 4), np.float32)]
        vs = [np.zeros_like(w) for w in ws], [np.zeros_like(b) for b in bs]
        work = [[np.empty((10, n), np.float32) for n in (8, 4)] for _ in range(3)]
        plan = k.fused_plan(ws, bs, *vs, [3, 0], [0.0, 0.0], *work)
        xbuf, tbuf, totals = np.empty((10, 6), np.float32), np.empty((10, 4), np.float32), np.zeros(3)
        done = k.fused_sgd_epoch(X, T, order, 20, 7, xbuf, tbuf, plan, 1, ACCURACIES.index("argmax"), 0.1,
                                 0.9, 0.0, False, np.zeros((2, 2)), -1.0, totals)
        runs.append((done, totals.copy(), ws))
    (d_r, t_r, w_r), (d_j, t_j, w_j) = runs
    assert d_r == d_j == (7, 0.0)
    assert t_r[1] == t_j[1] and t_r[2] == t_j[2] == 7
    np.testing.assert_allclose(t_j[0], t_r[0], rtol=7e-5)
    for p, q in zip(w_j, w_r, strict=True):
        np.testing.assert_allclose(p, q, rtol=7e-5, atol=7e-6)


@pytest.mark.parametrize(("change", "says"), [
    (lambda a: a.update(order=a["order"].astype(np.int32)), "order must be a C-contiguous int64"),
    (lambda a: a["order"].__setitem__(25, 100), "order must index the 100 rows"),
    (lambda a: a["order"].__setitem__(25, -1), "order must index the 100 rows"),
    (lambda a: a.update(n_steps=9), "do not fit in an order of 100 rows"),
    (lambda a: a.update(start=-10), "do not fit"),
    (lambda a: a.update(xbuf=np.empty((9, 6), np.float32)), "xbuf must have the plan's shape"),
    (lambda a: a.update(X=np.asfortranarray(a["X"])), "X must be a writeable C-contiguous"),
    (lambda a: a.update(T=a["T"][:50]), "X and T must have the same rows"),
    (lambda a: a.update(totals=np.zeros(2)), "totals must be"),
    (lambda a: a.update(accuracy_kind=3), "accuracy_kind must index"),
])
def test_the_compiled_loop_refuses_what_it_would_index_wrongly(change, says):
    """Every array the loop indexes is checked before it runs, nothing changed."""
    rng = np.random.default_rng(3)
    ws = [(rng.normal(size=(6, 4)) / 3).astype(np.float32)]
    bs = [np.zeros((1, 4), np.float32)]
    work = [[np.empty((10, 4), np.float32)] for _ in range(3)]
    plan = jit.fused_plan(ws, bs, [np.zeros((0, 0), np.float32)], [np.zeros((0, 0), np.float32)], [0], [0.0],
                          *work)
    args = dict(X=rng.normal(size=(100, 6)).astype(np.float32),
                T=np.eye(4, dtype=np.float32)[rng.integers(0, 4, 100)], order=rng.permutation(100), start=20,
                n_steps=7, xbuf=np.empty((10, 6), np.float32), tbuf=np.empty((10, 4), np.float32),
                accuracy_kind=1, totals=np.zeros(3))
    change(args)
    before = ws[0].copy()
    with pytest.raises(ValueError, match=says):
        jit.fused_sgd_epoch(args["X"], args["T"], args["order"], args["start"], args["n_steps"],
                            args["xbuf"], args["tbuf"], plan, 1, args["accuracy_kind"], 0.1, 0.0, 0.0, False,
                            np.zeros((1, 2)), -1.0, args["totals"])
    np.testing.assert_array_equal(ws[0], before)


@pytest.mark.parametrize("batch", [4, 32])  # the fused step's register tiles, its BLAS products
@pytest.mark.parametrize("new", ["momentum", "adam", "weights"])
def test_state_replaced_between_compiled_calls_is_what_the_next_steps_train(new, batch, monkeypatch):
    """The optimizer or a layer's weights replaced while an epoch runs (here
    right after the first compiled call, as another thread could): the
    epoch's next steps are the new optimizer's (its state made at its first
    step) or train the new weights, exactly as ``train_step`` on the same
    batches with the same replacement; not the old plan (the old arrays, or
    the new optimizer's settings on the old one's state)."""
    X, y = _data("softmax_xent", n=40 * batch)
    net, twin = _net("softmax_xent", "sgd"), _net("softmax_xent", "sgd")
    calls, real = [], jit.fused_sgd_epoch

    def replace(network):
        if new == "weights":
            network.layers[1].w = np.full_like(network.layers[1].w, 0.01)
        else:
            network.optimizer = OPTIMIZERS[new]()

    def first_then_replace(*args):
        out = real(*args)
        if not calls:
            replace(net)
        calls.append(args[4])  # the steps it was asked for
        return out

    monkeypatch.setattr(jit, "fused_sgd_epoch", first_then_replace)
    net.fit(X, y, epochs=1, batch_size=batch, progress=False, rng=3)
    # after the first step, which makes the state: one call, then step by step (a new optimizer), or
    # calls of growing length (new weights)
    assert calls[0] == 4 and (len(calls) == 1) == (new != "weights")
    order = np.random.default_rng(3).permutation(X.shape[0])
    for step in range(X.shape[0] // batch):
        if step == 5:  # the first step, then the call's four
            replace(twin)
        idx = order[step * batch:(step + 1) * batch]
        twin.train_step(X[idx], y[idx])
    assert net.optimizer.state is not None and not np.all(net.layers[1].w == np.float32(0.01))
    for p, q in zip(net.parameters(), twin.parameters(), strict=True):
        np.testing.assert_array_equal(p, q)

"""Random sequences of valid and invalid operations on one network (train,
tamper, save, load, predict), on both backends: whatever is refused changes
nothing, whatever is accepted leaves finite parameters, and the network is
never left unusable.  Plus the agreement of the update-bound kernels."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnet as fn
from fastnet.kernels import numba as J
from fastnet.kernels import numpy as R

BACKENDS = fn.available_backends()
REFUSALS = (TypeError, ValueError, FloatingPointError)


def _net(backend, optimizer):
    layers = [fn.DenseLayer("tanh", 4, neurons_num=6, rng=0), fn.DenseLayer("relu", neurons_num=6, rng=1),
              fn.DenseLayer("identity", neurons_num=3, rng=2)]
    return fn.NeuralNetwork(layers, "softmax_xent", optimizer, backend=backend)


def _state(net):
    """Every array of the network's state: parameters and the optimizer's."""
    st_ = net.optimizer.state
    arrays = [*st_["m"], *st_["v"]] if isinstance(st_, dict) else list(st_ or ())
    return [p.copy() for p in net.parameters()] + [a.copy() for a in arrays if isinstance(a, np.ndarray)]


def _same(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and x.tobytes() == y.tobytes()
                                    for x, y in zip(a, b, strict=True))


def _batch(rng, kind, batch):
    x = rng.normal(size=(batch, 4)).astype(np.float32)
    y = rng.integers(0, 3, batch)
    if kind == "nan":
        x[0, 0] = np.nan
    elif kind == "labels":
        y[-1] = 3
    elif kind == "shape":
        x = x[:, :3]
    elif kind == "huge":  # a finite loss, an update that would overflow
        x[:, 0] = 3e38
    return x, y


TAMPERS = {
    "velocity-shape": lambda net: (
        setattr(net.optimizer, "state", ["junk"]) if net.optimizer.state is None
        else net.optimizer.state.__setitem__(0, np.zeros((1, 1), np.float32))
        if isinstance(net.optimizer.state, list)
        else net.optimizer.state["m"].__setitem__(0, np.zeros((1, 1)))),
    "w-shape": lambda net: setattr(net.layers[1], "w", np.zeros((2, 2), np.float32)),
    "width": lambda net: setattr(net.layers[0], "neurons_num", 9),
    "relu-last": lambda net: setattr(net.layers[2], "activation", "relu"),
    "twice": lambda net: net.layers.__setitem__(2, net.layers[1]),
    "lr-inf32": lambda net: setattr(net.optimizer, "lr", 1e39),
}


def _undo(net, saved):
    """Put back what a tamper replaced (the objects themselves, not copies)."""
    layers, attrs, opt_state, lr = saved
    net.layers[:] = layers
    for la, (w, b, n, act) in zip(layers, attrs, strict=True):
        la.w, la.b, la.neurons_num, la.activation = w, b, n, act
    net.optimizer.state, net.optimizer.lr = opt_state, lr


def _saved(net):
    st_ = net.optimizer.state
    copy = ({k: (list(v) if isinstance(v, list) else v) for k, v in st_.items()} if isinstance(st_, dict)
            else None if st_ is None else list(st_))
    return (list(net.layers), [(la.w, la.b, la.neurons_num, la.activation) for la in net.layers], copy,
            net.optimizer.lr)


operation = st.one_of(
    st.tuples(st.just("train"), st.sampled_from(["ok", "ok", "nan", "labels", "shape", "huge"]),
              st.sampled_from([2, 5, 25])),
    st.tuples(st.just("tamper"), st.sampled_from(sorted(TAMPERS)), st.just(0)),
    st.tuples(st.just("save-load"), st.just(""), st.just(0)),
    st.tuples(st.just("predict"), st.sampled_from(["ok", "shape"]), st.sampled_from([1, 30])),
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opt", ["momentum", "adam"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operation, min_size=1, max_size=12), seed=st.integers(0, 2**16))
def test_random_operations_change_nothing_when_refused(tmp_path, backend, opt, ops, seed):
    rng = np.random.default_rng(seed)
    net = _net(backend, fn.SGD(0.1, momentum=0.9) if opt == "momentum" else fn.Adam(0.01))
    path = tmp_path / f"model-{seed}.npz"
    for kind, arg, size in ops:
        before = _state(net)
        saved = _saved(net)
        if kind == "tamper":
            TAMPERS[arg](net)
            x, y = _batch(rng, "ok", 5)
            with np.errstate(all="ignore"), pytest.raises(REFUSALS):
                net.train_step(x, y)
            _undo(net, saved)  # the objects the tamper replaced are back: their contents must be too
            assert _same(_state(net), before), f"a refused step after {arg} changed the state"
            continue
        if kind == "train":
            x, y = _batch(rng, arg, size)
            try:
                with np.errstate(all="ignore"):
                    net.train_step(x, y)
            except REFUSALS:
                assert arg != "ok", "a valid step was refused"
                assert _same(_state(net), before), f"a refused step ({arg}) changed the state"
            else:  # "huge" may be fine: where tanh saturates, dz is 0 and the update finite
                assert arg in ("ok", "huge"), f"a bad batch ({arg}) was accepted"
        elif kind == "save-load":
            net.save(path)
            loaded = fn.NeuralNetwork.load(path, backend=backend)
            for p, q in zip(net.parameters(), loaded.parameters(), strict=True):
                np.testing.assert_array_equal(p, q)
        else:
            x, _ = _batch(rng, arg, size)
            if arg == "ok":
                assert net.predict(x).shape == (size,)
            else:
                with pytest.raises(ValueError):
                    net.predict(x)
            assert _same(_state(net), before)
        assert all(np.isfinite(p).all() for p in net.parameters())
    x, y = _batch(rng, "ok", 5)
    net.train_step(x, y)  # still usable after everything
    assert all(np.isfinite(p).all() for p in net.parameters())


def _random_floats(rng, dtype, size):
    """Any bit patterns: normals, subnormals, zeros, infs and NaNs of both signs."""
    ints = np.uint32 if dtype == np.float32 else np.uint64
    bits = rng.integers(0, np.iinfo(ints).max, size=size, dtype=ints, endpoint=True)
    return bits.view(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_abs_agrees_on_any_bits(dtype):
    """The compiled max_abs reads the floats' bits; the reference uses np.abs."""
    rng = np.random.default_rng(11)
    for size in [0, 1, 2, 7, 64, 1000]:
        for _ in range(20):
            a = _random_floats(rng, dtype, size).reshape(size, 1)
            if rng.random() < 0.7:  # mostly finite, so that the finite answers are compared too
                a = np.where(np.isfinite(a), a, dtype(1.5))
            assert J.max_abs(a) == R.max_abs(a), a.ravel()[:8]


def test_update_bounds_agree_and_refuse_what_overflows():
    """The compiled bounds are the reference's source; and each refuses inf,
    NaN, and a step past its limit, and accepts ordinary values."""
    big, limit = R.safe_limits(np.float32)
    rng = np.random.default_rng(3)
    for _ in range(200):
        g, p, v, m = (float(10.0 ** rng.uniform(-5, 35)) for _ in range(4))
        lr, mu = float(10.0 ** rng.uniform(-4, 1)), float(rng.choice([0.0, 0.9]))
        wd = float(rng.choice([0.0, 1e-4]))
        args = (g, 32 * g, p, v, lr, mu, wd, bool(mu and rng.random() < 0.5), big, limit)
        assert J.sgd_update_bound(*args) == R.sgd_update_bound(*args)
        adam = (g, 32 * g, p, m, v, lr, 0.9, 0.999, 1e-8, wd, int(rng.integers(1, 10**6)), big, limit)
        got, want = J.adam_update_bound(*adam), R.adam_update_bound(*adam)
        assert got[0] == want[0] and np.allclose(got[1:], want[1:], rtol=1e-12)
    ok = (1.0, 32.0, 1.0, 1.0, 0.1, 0.9, 1e-4, True, big, limit)
    assert R.sgd_update_bound(*ok)[0]
    for bad in (np.inf, np.nan, 1e32):  # 1e32: a step of 1.9e31 with lr 0.1, past the limit (2.5e30)
        assert not R.sgd_update_bound(bad, 32 * bad, *ok[2:])[0]
        assert not J.sgd_update_bound(bad, 32 * bad, *ok[2:])[0]

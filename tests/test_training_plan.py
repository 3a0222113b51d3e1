"""fastnet.training.plan: the one decision of which path a step takes, with its
reason, made without changing anything."""

import numpy as np
import pytest

import fastnet as fn
from fastnet import training
from fastnet._changes import COUNT


def _net(backend, optimizer, activation="relu"):
    layers = [fn.DenseLayer(activation, 6, neurons_num=5, rng=0),
              fn.DenseLayer("identity", neurons_num=3, rng=1)]
    return fn.NeuralNetwork(layers, "softmax_xent", optimizer, backend=backend)


class OwnSGD(fn.SGD):
    """A subclass: its rule may be its own."""


class Square:
    """A user's activation: any object with f and df."""
    f, df = staticmethod(np.square), staticmethod(lambda a: 2 * a)


def test_the_layered_cases_say_why():
    opt = fn.SGD(0.1)
    assert training.plan(_net("numpy", opt), 4) == ("layered", "the numpy backend has no fused step")
    if "numba" not in fn.available_backends():
        pytest.skip("numba is not installed")
    cases = {
        "keep_grads": (_net("numba", fn.SGD(0.1)), dict(keep_grads=True)),
        "communicator": (_net("numba", fn.SGD(0.1)), dict(comm=object())),
        "OwnSGD is not SGD or Adam": (_net("numba", OwnSGD(0.1)), {}),
        "layers[0]'s activation has no compiled kernel": (_net("numba", fn.SGD(0.1), Square()), {}),
    }
    for says, (net, kwargs) in cases.items():
        path, reason = training.plan(net, 4, **kwargs)
        assert path == "layered" and says in reason, (says, reason)


@pytest.mark.parametrize("optimizer", [lambda: fn.SGD(0.1, momentum=0.9), lambda: fn.Adam(1e-3)])
def test_the_fused_path_names_its_products(optimizer):
    if "numba" not in fn.available_backends():
        pytest.skip("numba is not installed")
    net = _net("numba", optimizer())
    assert training.plan(net, 4) == ("fused", "one compiled call, products by the register tiles (4 rows)")
    assert training.plan(net, 64) == ("fused", "one compiled call, products by BLAS (64 rows)")
    assert net.plan(64) == "fused" and net.plan(64, comm=object()) == "layered"


@pytest.mark.parametrize("backend", fn.available_backends())
def test_planning_changes_nothing(backend):
    net = _net(backend, fn.SGD(0.1, momentum=0.9))
    x, y = np.ones((4, 6), np.float32), np.arange(4) % 3
    net.train_step(x, y)
    before = ([p.copy() for p in net.parameters()], [v.copy() for v in net.optimizer.state], COUNT.n,
              dict(net.step_state.plans))
    for batch in (1, 4, 64, 4096):
        for kwargs in ({}, {"keep_grads": True}, {"comm": object()}):
            training.plan(net, batch, **kwargs)
    params, state, count, plans = before
    assert COUNT.n == count and net.step_state.plans == plans
    for got, want in zip(net.parameters() + list(net.optimizer.state), params + state, strict=True):
        np.testing.assert_array_equal(got, want)

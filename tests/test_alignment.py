"""Every array fastnet allocates for the kernels starts on a 64-byte boundary.

NumPy aligns to 16 bytes only; the kernels' vector loads along rows that start
16 or 48 bytes into a cache line measured 1.15-1.25x slower (see
``fastnet._workspace``).
"""

import copy
import pickle

import numpy as np
import pytest

import fastnet as fn
from fastnet._workspace import aligned_copy, aligned_empty, is_aligned


@pytest.mark.parametrize("shape", [(0,), (1,), (3, 5), (7, 1, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_aligned_empty_is_aligned_c_contiguous_and_exact(shape, dtype):
    many = [aligned_empty(shape, dtype) for _ in range(8)]  # several, so luck cannot pass it
    for a in many:
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.size == 0 or a.ctypes.data % 64 == 0  # an empty array has no data to align
    for a in many:  # no two share memory: writing one leaves the others alone
        a[...] = 1
    for a, b in zip(many, many[1:], strict=False):
        assert not np.shares_memory(a, b)


def test_aligned_copy_always_copies():
    buf = aligned_empty(40, np.float32)
    aligned = buf[:16].reshape(4, 4)
    off = buf[4:20].reshape(4, 4)  # 16 bytes into a line
    off[...] = np.arange(16).reshape(4, 4)
    for a in (aligned, off, np.asfortranarray(off)):
        moved = aligned_copy(a)
        assert is_aligned(moved) and np.array_equal(moved, a) and not np.shares_memory(moved, buf)
    cast = aligned_copy(off, np.float64)
    assert cast.dtype == np.float64 and is_aligned(cast) and np.array_equal(cast, off)


def test_build_keeps_its_own_aligned_weights():
    given = {}

    def init(layer):  # a custom init whose arrays the layer must not train in place
        layer.w = given["w"] = np.ones((layer.n_inputs, layer.neurons_num), layer.dtype)
        layer.b = given["b"] = np.zeros((1, layer.neurons_num), layer.dtype)

    layer = fn.DenseLayer("relu", 5, init, 3)
    for name in ("w", "b"):
        own = getattr(layer, name)
        assert is_aligned(own) and not np.shares_memory(own, given[name])
        np.testing.assert_array_equal(own, given[name])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
@pytest.mark.parametrize("batch", [3, 64])
def test_parameters_state_and_workspaces_are_aligned(backend, optimizer, batch):
    if backend == "numba":
        pytest.importorskip("numba")
    opt = fn.SGD(1e-3, momentum=0.9) if optimizer == "momentum" else fn.Adam(1e-3)
    layers = [fn.DenseLayer("relu", 37, neurons_num=20, rng=0),
              fn.DenseLayer("identity", neurons_num=3, rng=1)]
    net = fn.NeuralNetwork(layers, "softmax_xent", opt, backend=backend)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 37)).astype(np.float32)
    net.train_step(x, rng.integers(0, 3, batch))
    arrays = {"params": net.parameters(),
              "workspaces": [a for la in layers for a in (la.a, la.y) if a is not None]}
    state = opt.state if optimizer == "momentum" else opt.state["m"] + opt.state["v"]
    arrays["state"] = [s for s in state if s.size]
    assert all(arrays.values()), arrays
    for name, group in arrays.items():
        assert all(is_aligned(a) for a in group), (name, [a.ctypes.data % 64 for a in group])


def _pickled(obj):
    return pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
@pytest.mark.parametrize("make_copy", [copy.deepcopy, _pickled], ids=["deepcopy", "pickle"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_copies_are_aligned_equal_and_independent(backend, optimizer, make_copy, dtype):
    """copy.deepcopy and pickle give a network (its layers hold their kernel
    module, which pickle cannot take) whose parameters and optimizer state are
    equal to the original's, 64-byte aligned and its own, without the buffers
    of the last pass, and which trains exactly as the original does."""
    if backend == "numba":
        pytest.importorskip("numba")
    opt = fn.SGD(1e-2, momentum=0.9) if optimizer == "momentum" else fn.Adam(1e-2)
    layers = [fn.DenseLayer("relu", 37, neurons_num=20, dtype=dtype, rng=0),
              fn.DenseLayer("identity", neurons_num=3, dtype=dtype, rng=1)]
    net = fn.NeuralNetwork(layers, "softmax_xent", opt, backend=backend)
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(5, 37)).astype(dtype), rng.integers(0, 3, 5)) for _ in range(5)]
    for x, y in batches[:2]:
        net.train_step(x, y)
    twin = make_copy(net)

    def state(n):
        s = n.optimizer.state
        return [a for a in (s if optimizer == "momentum" else s["m"] + s["v"]) if a.size]

    assert twin.backend == backend and twin._k is net._k and twin.layers[0]._k is net.layers[0]._k
    assert twin._store == {} and twin._steps is None
    for la in twin.layers:  # the buffers of the last pass are not copied
        assert la._store == {} and all(getattr(la, name) is None for name in la._CACHES)
    for mine, theirs in zip(twin.parameters() + state(twin), net.parameters() + state(net), strict=True):
        assert is_aligned(mine) and not np.shares_memory(mine, theirs)
        np.testing.assert_array_equal(mine, theirs)
    before = [p.copy() for p in net.parameters()]
    twin_losses = [twin.train_step(x, y) for x, y in batches[2:]]
    for p, q in zip(net.parameters(), before, strict=True):  # training the copy left the original alone
        np.testing.assert_array_equal(p, q)
    # the same arithmetic on the same values: exactly the same results
    assert twin_losses == [net.train_step(x, y) for x, y in batches[2:]]
    for mine, theirs in zip(twin.parameters(), net.parameters(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert all(is_aligned(a) for la in twin.layers for a in (la.a, la.y))


def test_a_layer_copies_alone_and_a_shallow_copy_shares_everything():
    layer = fn.DenseLayer("tanh", 6, neurons_num=5, rng=0)
    x = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)
    want = layer.forward_pass(x).copy()
    for twin in (copy.deepcopy(layer), _pickled(layer)):
        assert twin.y is None and is_aligned(twin.w) and not np.shares_memory(twin.w, layer.w)
        np.testing.assert_array_equal(twin.forward_pass(x), want)
    offset = aligned_empty(5 * 6 + 4, np.float32)[4:].reshape(6, 5)  # 16 bytes into a line
    offset[...] = layer.w
    layer.w = offset
    shallow = copy.copy(layer)
    assert all(getattr(shallow, k) is v for k, v in vars(layer).items())

"""Objects keep their state consistent: optimizers, layers, networks, model files."""

import json
import tracemalloc

import numpy as np
import pytest

import fastnet as fn

BACKENDS = fn.available_backends()


def _net(backend="numpy", optimizer=None, width=5):
    layers = [fn.DenseLayer("tanh", 4, neurons_num=width, rng=0, dtype=np.float64),
              fn.DenseLayer("identity", neurons_num=3, rng=1, dtype=np.float64)]
    return fn.NeuralNetwork(layers, "softmax_xent", optimizer or fn.SGD(0.1), backend=backend)


DATA = (np.random.default_rng(0).normal(size=(6, 4)), np.array([0, 1, 2, 0, 1, 2]))


@pytest.mark.parametrize("name, value", [("momentum", -0.1), ("momentum", 1.0), ("weight_decay", -1.0),
                                         ("lr", float("nan"))])
def test_sgd_hyperparameters_are_validated_when_set(name, value):
    opt = fn.SGD(0.1, momentum=0.5)
    before = getattr(opt, name)
    with pytest.raises(ValueError, match=name if name != "lr" else "learning rate"):
        setattr(opt, name, value)
    assert getattr(opt, name) == before


@pytest.mark.parametrize("name, value", [("beta1", 1.0), ("beta2", -0.5), ("eps", 0.0)])
def test_adam_hyperparameters_are_validated_when_set(name, value):
    opt = fn.Adam()
    before = getattr(opt, name)
    with pytest.raises(ValueError, match=name):
        setattr(opt, name, value)
    assert getattr(opt, name) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_switching_momentum_on_mid_training_starts_velocities_at_zero(backend):
    a, b = _net(backend, fn.SGD(0.1)), _net(backend, fn.SGD(0.1, momentum=0.9))
    a.train_step(*DATA)
    b.optimizer.momentum = 0.0
    b.train_step(*DATA)
    np.testing.assert_array_equal(a.parameters()[0], b.parameters()[0])
    a.optimizer.momentum = 0.9  # the placeholder velocities must not be written
    b.optimizer.momentum = 0.9
    b.optimizer.reset()
    a.train_step(*DATA)
    b.train_step(*DATA)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_array_equal(p, q)


def test_an_optimizer_refuses_the_parameters_of_another_network():
    opt = fn.SGD(0.1, momentum=0.9)
    first, second = _net(optimizer=opt), _net(width=7)
    first.train_step(*DATA)
    before = [p.copy() for p in second.parameters()]
    with pytest.raises(ValueError, match="one optimizer per network"):
        opt.step(second._k, second.parameters(), second.parameters())
    for p, q in zip(second.parameters(), before, strict=True):
        np.testing.assert_array_equal(p, q)


def test_an_optimizer_belongs_to_one_network():
    opt = fn.SGD(0.1, momentum=0.9)
    first = _net(optimizer=opt)
    with pytest.raises(ValueError, match="belongs to another network.*create another"):
        _net(optimizer=opt)
    second = _net()
    mine = second.optimizer
    with pytest.raises(ValueError, match="belongs to another network"):
        second.optimizer = opt
    assert second.optimizer is mine
    del first  # a network that is gone holds its optimizer no longer
    second.optimizer = opt
    assert second.optimizer is opt
    mine_again = _net(optimizer=mine)  # released by the assignment above
    assert mine_again.optimizer is mine


def test_a_refused_network_leaves_its_layers_unbuilt():
    first = fn.DenseLayer("relu", 4, neurons_num=5, rng=0)
    second = fn.DenseLayer("relu", neurons_num=3, rng=1)
    with pytest.raises(ValueError, match="identity"):
        fn.NeuralNetwork([first, second], "softmax_xent")
    assert not second.built and second.n_inputs is None


def test_a_failed_build_leaves_the_layer_as_it_was():
    def bad_init(layer):
        layer.w = np.zeros((layer.n_inputs, layer.neurons_num), np.float64)  # wrong dtype
        layer.b = np.zeros((1, layer.neurons_num), np.float32)

    layer = fn.DenseLayer("relu", None, bad_init, 3)
    with pytest.raises(ValueError, match="init_func must set w"):
        layer.build(4)
    assert not layer.built and layer.n_inputs is None and layer.w is None


def test_subclass_of_a_builtin_activation_uses_its_own_methods():
    class Doubled(fn.ReLU):
        def f(self, a):
            return 2 * np.maximum(a, 0)

        def df(self, a):
            return 2.0 * (a > 0)

    x = np.array([[1.0, -2.0, 3.0]], np.float32)
    mine = fn.DenseLayer(Doubled(), 3, "xavier_init_gauss", 2, rng=0)
    plain = fn.DenseLayer("relu", 3, "xavier_init_gauss", 2, rng=0)
    np.testing.assert_array_equal(mine.forward_pass(x), 2 * plain.forward_pass(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_keeps_nan_so_divergence_is_not_hidden(backend):
    k = fn.backend.kernels_for(backend)
    a = np.array([[np.nan, -1.0, 2.0]], np.float32)
    y = k.activation_forward(fn.kernels.ACTIVATION_CODES["relu"], 0.0, a, np.empty_like(a))
    assert np.isnan(y[0, 0]) and y[0, 1] == 0 and y[0, 2] == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_batches_of_changing_size_reuse_the_workspaces(backend):
    layers = [fn.DenseLayer("relu", 300, neurons_num=200, rng=0),
              fn.DenseLayer("identity", neurons_num=10, rng=1)]
    net = fn.NeuralNetwork(layers, "softmax_xent", fn.SGD(1e-3), backend=backend)
    rng = np.random.default_rng(0)
    big = rng.normal(size=(64, 300)).astype(np.float32)
    labels = rng.integers(0, 10, 64)
    sizes = (64, 7, 33, 64, 1)
    for size in sizes:  # warm-up: workspaces grow to 64 rows, every kernel path is loaded
        net.train_step(big[:size], labels[:size])
    tracemalloc.start()
    try:
        for size in sizes:
            net.train_step(big[:size], labels[:size])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a reallocated workspace would be 64 * 200 * 4 = 51 KB; the numpy reference's
    # own temporaries are weight-sized (240 KB) and only the numba path is held to this
    if backend == "numba":
        assert peak < 16_384, peak


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_batch_mode_after_a_change_of_dtype_accumulates_in_the_new_dtype(backend):
    """Full-batch ``fit`` on float32 layers, then on float64 layers of the same
    shapes put in their place, equals a float64 network's ``fit`` from the same
    weights: the epoch's mean gradient is gathered in float64 buffers, not in
    the float32 ones of the first fit.  (Gathered in float32 it was 3e-10 to
    5e-10 off here; float64 arithmetic alone, in another order, gives ~1e-16, so
    the bound is 1e-12.)"""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 4)), rng.integers(0, 3, 64)

    def layers(dtype):
        return [fn.DenseLayer("tanh", 4, neurons_num=8, rng=0, dtype=dtype),
                fn.DenseLayer("identity", 8, neurons_num=3, rng=1, dtype=dtype)]

    net = fn.NeuralNetwork(layers(np.float32), "softmax_xent", fn.SGD(0.1), backend=backend)
    net.fit(X, y, epochs=1, batch_size=16, mode="gd", progress=False)
    net.layers, net.optimizer = layers(np.float64), fn.SGD(0.1)
    net.fit(X, y, epochs=2, batch_size=16, mode="gd", progress=False)
    twin = fn.NeuralNetwork(layers(np.float64), "softmax_xent", fn.SGD(0.1), backend=backend)
    twin.fit(X, y, epochs=2, batch_size=16, mode="gd", progress=False)
    for p, q in zip(net.parameters(), twin.parameters(), strict=True):
        assert p.dtype == np.float64
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-12)


def test_load_refuses_oversized_claims_before_allocating(tmp_path):
    path = _net().save(tmp_path / "m.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    config = json.loads(str(arrays["config"]))
    config["layers"][0]["neurons_num"] = 10**9  # 4 * 1e9 * 8 bytes if it were allocated
    arrays["config"] = np.array(json.dumps(config))
    np.savez(tmp_path / "big.npz", **arrays)
    with pytest.raises(fn.ModelFileError, match="should be float64"):
        fn.NeuralNetwork.load(tmp_path / "big.npz")


def test_load_reports_a_bad_dtype_as_a_model_file_error(tmp_path):
    path = _net().save(tmp_path / "m.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    config = json.loads(str(arrays["config"]))
    config["dtype"] = "int8"
    arrays["config"] = np.array(json.dumps(config))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(fn.ModelFileError, match="dtype must be float32 or float64"):
        fn.NeuralNetwork.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flush_subnormal_zeroes_only_subnormals(backend, dtype):
    k = fn.backend.kernels_for(backend)
    tiny = np.finfo(dtype).tiny
    a = np.array([[tiny / 2, -tiny / 3, tiny, -tiny, 0.0, 1.0, np.nan, np.inf]], dtype)
    k.flush_subnormal(a)
    np.testing.assert_array_equal(a[0, :6], np.array([0, 0, tiny, -tiny, 0, 1], dtype))
    assert np.isnan(a[0, 6]) and np.isinf(a[0, 7])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_state_never_decays_into_subnormals(backend, optimizer):
    """Under a zero gradient, momentum and Adam's moments decay geometrically; in
    float32 they would reach the smallest subnormal and stay there (0.9 times it
    rounds back to it), making every later update ~100x slower on x86."""
    k = fn.backend.kernels_for(backend)
    p = np.ones((4, 4), np.float32)
    g = np.zeros_like(p)
    g[0, 0] = 1.0  # one kick, then nothing
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t in range(1, 2001):
        if optimizer == "sgd":
            k.sgd_step(p, g, v, 1e-3, 0.9, 0.0, False)
        else:
            k.adam_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, t)
        g[0, 0] = 0.0
    tiny = np.finfo(np.float32).tiny
    for state in (m, v):
        assert not np.any((state != 0) & (np.abs(state) < tiny)), state
    decayed = v if optimizer == "sgd" else m  # factor 0.9 per step: subnormal after ~830 steps
    assert decayed[0, 0] == 0  # it went all the way to zero, through the flush


@pytest.mark.parametrize("call", [
    lambda net, x, y: net.fit(x, y, shuffle="no", progress=False),
    lambda net, x, y: net.fit(x, y, progress="no"),
    lambda net, x, y: net.train_step(x, y, keep_grads="no"),
    lambda net, x, y: setattr(net.optimizer, "nesterov", "no"),
    lambda net, x, y: fn.SGD(0.1, momentum=0.9, nesterov=1),
])
def test_flags_must_be_bool(call):
    """Before: "no" was read for truthiness and acted as True."""
    net = _net(optimizer=fn.SGD(0.1, momentum=0.9))
    before = [p.copy() for p in net.parameters()]
    with pytest.raises(TypeError, match="must be True or False, got 'no'|must be True or False, got 1"):
        call(net, *DATA)
    assert not net.optimizer.nesterov
    for p, q in zip(net.parameters(), before, strict=True):
        np.testing.assert_array_equal(p, q)
    net.optimizer.nesterov = np.True_  # NumPy's bool is a bool
    assert net.optimizer.nesterov is True


@pytest.mark.parametrize(("rng", "exc"), [("seed", TypeError), (-1, ValueError), (True, TypeError)])
def test_rng_errors_name_rng(rng, exc):
    with pytest.raises(exc, match="rng must be None, an int >= 0 or a numpy Generator"):
        fn.DenseLayer("relu", 4, neurons_num=3, rng=rng)
    with pytest.raises(exc, match="rng must be"):
        _net().fit(*DATA, rng=rng, progress=False)


def test_assigning_a_wrong_type_raises_at_once():
    net = _net()
    layer, loss, opt = net.layers[0], net.loss, net.optimizer
    with pytest.raises(TypeError, match="activation must be a name such as 'relu'"):
        layer.activation = 5
    with pytest.raises(TypeError, match="loss must be a Loss object or a name"):
        net.loss = 5
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        net.loss = "hinge"
    with pytest.raises(TypeError, match="optimizer must be an Optimizer"):
        net.optimizer = "sgd"
    with pytest.raises(AttributeError):
        layer.dw = np.zeros((4, 5))  # the layers' workspaces are read-only
    assert (layer.activation.name, net.loss, net.optimizer) == ("tanh", loss, opt)


@pytest.mark.parametrize("optimizer", [lambda: fn.SGD(0.1, momentum=0.9), lambda: fn.Adam(1e-2)])
def test_set_state_takes_another_replicas_state_checked(optimizer):
    """What distributed training does with rank 0's broadcast state: the copy is
    taken (on cache lines, as the kernels' arrays are), a state that does not
    fit the parameters is refused with the old state kept, None resets."""
    import pickle

    src, dst = _net(optimizer=optimizer()), _net(optimizer=optimizer())
    src.train_step(*DATA)
    dst.train_step(DATA[0][::-1].copy(), DATA[1])  # a state of its own
    state = pickle.loads(pickle.dumps(src.optimizer.state))  # as comm.bcast delivers it
    dst.optimizer.set_state(state, dst.parameters())
    got, want = dst.optimizer.state, src.optimizer.state
    arrays = (lambda s: s["m"] + s["v"]) if isinstance(want, dict) else list
    for a, b in zip(arrays(got), arrays(want), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.ctypes.data % 64 == 0
    dst.train_step(*DATA)  # the state is the network's: a step takes it
    kept = [a.copy() for a in arrays(dst.optimizer.state)]
    wrong = pickle.loads(pickle.dumps(state))
    (wrong["m"] if isinstance(wrong, dict) else wrong)[0] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"\[0\] must be a writeable C-contiguous float64 array of shape"):
        dst.optimizer.set_state(wrong, dst.parameters())
    for a, b in zip(arrays(dst.optimizer.state), kept, strict=True):
        np.testing.assert_array_equal(a, b)
    dst.optimizer.set_state(None, dst.parameters())
    assert dst.optimizer.state is None

"""Reference correctness: formulas recomputed independently in the tests.

Tolerances are derived from the arithmetic (eps64 = 2.2e-16, eps32 = 1.2e-7);
each comparison says why its tolerance is what it is.  Expected values are
computed here, with explicit NumPy, never copied from fastnet's output.
"""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

import fastnet as fn
from fastnet.backend import kernels_for

F32, F64 = np.float32, np.float64
EPS64 = np.finfo(F64).eps
BACKENDS = fn.available_backends()
ACTIVATIONS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu"]
ACTIVATION_OBJECTS = [*ACTIVATIONS, fn.LeakyReLU(0.2), fn.ELU(0.5)]


def _id(value):
    return value if isinstance(value, str) else repr(value)


def _alpha(act):
    return fn.get_activation(act).alpha


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------
def inline_activation(act, a):
    """The activations written out from their textbook definitions."""
    name, alpha = fn.get_activation(act).name, _alpha(act)
    if name == "identity":
        return a.copy()
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-a))
    if name == "tanh":
        e = np.exp(2.0 * a)
        return (e - 1.0) / (e + 1.0)
    if name == "relu":
        return np.where(a > 0, a, 0.0)
    if name == "leaky_relu":
        return np.where(a > 0, a, alpha * a)
    if name == "elu":
        return np.where(a > 0, a, alpha * (np.exp(a) - 1.0))
    if name == "softplus":
        return np.log(1.0 + np.exp(a))
    if name == "gelu":
        return 0.5 * a * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a**3)))
    raise AssertionError(name)


@pytest.mark.parametrize("act", ACTIVATION_OBJECTS, ids=_id)
def test_activation_matches_inline_formula(act):
    a = np.linspace(-6.0, 6.0, 241)
    got = fn.get_activation(act).f(a)
    want = inline_activation(act, a)
    # Both sides are a few correctly rounded operations on moderate values: a few
    # ulps relative.  The inline forms of tanh, elu and softplus round at the scale
    # of 1 (e^(2a) - 1, e^a - 1, 1 + e^a), so near a = 0 or for softplus(-6) their
    # error is a few eps absolute: hence the absolute term.
    np.testing.assert_allclose(got, want, rtol=16 * EPS64, atol=16 * EPS64)
    assert got.dtype == F64


@pytest.mark.parametrize("act", ACTIVATION_OBJECTS, ids=_id)
def test_activation_derivative_matches_central_difference(act):
    act = fn.get_activation(act)
    grid = np.geomspace(1e-2, 8.0, 80)
    a = np.concatenate([-grid[::-1], grid])  # |a| >= 1e-2: no step of h reaches a kink at 0
    h = 1e-5 * np.maximum(1.0, np.abs(a))
    fd = (act.f(a + h) - act.f(a - h)) / ((a + h) - (a - h))
    # Central difference: truncation h^2 |f'''| / 6 <~ 1e-10 and rounding
    # ~4 eps |f| / h <~ 1e-9 for |f| <= 8; 1e-6 relative plus 1e-8 absolute is
    # 10x to 100x above that and far below any wrong formula.
    np.testing.assert_allclose(act.df(a), fd, rtol=1e-6, atol=1e-8)


def test_relu_like_derivative_at_zero_is_the_left_side():
    zero = np.zeros(1)
    assert fn.ReLU().df(zero)[0] == 0.0
    assert fn.LeakyReLU(0.2).df(zero)[0] == 0.2
    assert fn.ReLU().f(zero)[0] == 0.0


HUGE = [-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("act", ACTIVATION_OBJECTS, ids=_id)
def test_activation_is_finite_without_warnings_at_extremes(act, dtype):
    big = float(np.finfo(dtype).max)
    a = np.array([-big, -3e38, *HUGE, 3e38, big], dtype=dtype)
    act = fn.get_activation(act)
    # Any overflow or invalid operation raises here (pytest turns warnings into errors).
    y, d = act.f(a), act.df(a)
    assert y.dtype == dtype and d.dtype == dtype
    assert np.isfinite(y).all(), y
    assert np.isfinite(d).all(), d


# (name, a, f(a), f'(a)): exact limits, representable in both dtypes.
EXACT_VALUES = [
    ("sigmoid", -1e4, 0.0, 0.0),
    ("sigmoid", 0.0, 0.5, 0.25),
    ("sigmoid", 1e4, 1.0, 0.0),
    ("softplus", -1e4, 0.0, 0.0),
    ("softplus", 0.0, math.log(2.0), 0.5),
    ("softplus", 1e4, 1e4, 1.0),
    ("softplus", 100.0, 100.0, 1.0),
    ("tanh", -1e4, -1.0, 0.0),
    ("tanh", 1e4, 1.0, 0.0),
    ("elu", -1e4, -1.0, 0.0),
    ("elu", 1e4, 1e4, 1.0),
    ("gelu", 1e4, 1e4, 1.0),
    ("gelu", 0.0, 0.0, 0.5),
    ("relu", -1e4, 0.0, 0.0),
    ("relu", 1e4, 1e4, 1.0),
    ("leaky_relu", -1e4, -100.0, 0.01),
    ("identity", -1e4, -1e4, 1.0),
]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("name", "a", "f", "df"), EXACT_VALUES)
def test_activation_exact_limits(name, a, f, df, dtype):
    act = fn.get_activation(name)
    x = np.array([a], dtype=dtype)
    assert act.f(x)[0] == dtype(f)
    assert act.df(x)[0] == dtype(df)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_gelu_negative_tail_vanishes(dtype):
    # gelu(a) = a sigmoid(2u(a)) is below 1e-40 in magnitude for a <= -10.5 (u <= -49.7),
    # and its derivative likewise; fastnet evaluates the tail at a = -10 (documented
    # clip), which leaves values of order 1e-36: zero on the scale of order-1 activations.
    a = np.array([-3e38, -1e4, -100.0, -30.0, -10.5], dtype=dtype)
    act = fn.GELU()
    assert np.all(np.abs(act.f(a)) < 1e-30)
    assert np.all(np.abs(act.df(a)) < 1e-30)


def test_softplus_and_sigmoid_tails_are_accurate():
    # Far tails where log(1 + e^a) and 1 - sigmoid would lose everything if computed naively.
    a = np.array([-100.0, -30.0, 30.0])
    # softplus(a) = log1p(e^a) = e^a (1 - e^a / 2 + ...): relative error of the
    # first term e^a / 2 <= 5e-14 for a <= -30.
    np.testing.assert_allclose(fn.Softplus().f(a[:2]), np.exp(a[:2]), rtol=1e-13)
    # softplus(30) = 30 + log1p(e^-30) = 30 + 9.36e-14: 30 to 2 ulps.
    np.testing.assert_allclose(fn.Softplus().f(a[2:]), 30.0 + np.exp(-30.0), rtol=4 * EPS64)
    # sigmoid(a) = e^a / (1 + e^a) for a < 0: relative error e^a <= 1e-13 at a = -30.
    np.testing.assert_allclose(fn.Sigmoid().f(a[:2]), np.exp(a[:2]), rtol=1e-13)


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------
def test_softmax_xent_by_hand_labels_and_one_hot_agree():
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    labels = np.array([2, 0])
    one_hot = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    loss = fn.SoftmaxCrossEntropy()
    per_sample = [math.log(math.e + math.e**2 + math.e**3) - 3.0, math.log(3.0)]
    want_value = sum(per_sample) / 2
    e = np.exp(z)
    want_grad = e / e.sum(axis=1, keepdims=True) - one_hot  # per sample: not divided by B
    for t in (labels, one_hot):
        # A few roundings of O(1) values.
        assert loss.value(z, t) == pytest.approx(want_value, rel=8 * EPS64)
        np.testing.assert_allclose(loss.grad(z, t), want_grad, rtol=8 * EPS64, atol=8 * EPS64)
    assert loss.value(z, labels) == loss.value(z, one_hot)
    np.testing.assert_array_equal(loss.grad(z, labels), loss.grad(z, one_hot))


def test_bce_by_hand():
    z = np.array([[0.5, -1.0], [2.0, 0.0]])
    t = np.array([[1.0, 0.0], [0.0, 1.0]])
    loss = fn.BinaryCrossEntropy()
    per_elem = np.log(1.0 + np.exp(z)) - t * z
    want_value = per_elem.mean()  # mean over C, then over B: the mean of all entries
    want_grad = (1.0 / (1.0 + np.exp(-z)) - t) / 2  # / C = 2; per sample
    assert loss.value(z, t) == pytest.approx(want_value, rel=16 * EPS64)
    np.testing.assert_allclose(loss.grad(z, t), want_grad, rtol=8 * EPS64, atol=8 * EPS64)
    # Integer 0/1 labels give the same.
    assert loss.value(z, t.astype(int)) == loss.value(z, t)


def test_mse_by_hand():
    z = np.array([[0.5, -1.0, 2.0], [2.0, 0.0, 1.0]])
    t = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
    loss = fn.MeanSquaredError()
    want_value = (0.25 + 1.0 + 0.0 + 4.0 + 1.0 + 4.0) / 6  # exact in binary until the /6
    assert loss.value(z, t) == pytest.approx(want_value, rel=2 * EPS64)
    # z - t and 2 (z - t) are exact here; only the division by C = 3 rounds.
    np.testing.assert_allclose(loss.grad(z, t), 2.0 * (z - t) / 3, rtol=2 * EPS64, atol=0)


LOSSES = {
    "mse": (fn.MeanSquaredError, lambda rng, b, c: rng.normal(size=(b, c))),
    "softmax_xent": (fn.SoftmaxCrossEntropy, lambda rng, b, c: rng.integers(0, c, b)),
    "bce_logits": (fn.BinaryCrossEntropy, lambda rng, b, c: rng.uniform(0.0, 1.0, (b, c))),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_grad_is_central_difference_of_value_times_batch(name):
    cls, make_t = LOSSES[name]
    rng = np.random.default_rng(1)
    b, c = 4, 3
    loss = cls()
    z = rng.normal(0.0, 2.0, (b, c))
    t = make_t(rng, b, c)
    grad = loss.grad(z, t)
    fd = np.empty_like(z)
    for idx in np.ndindex(z.shape):
        h = 1e-5 * max(1.0, abs(z[idx]))
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        # value is the batch mean; grad is per sample: d(value)/dz = grad / B.
        fd[idx] = b * (loss.value(zp, t) - loss.value(zm, t)) / (zp[idx] - zm[idx])
    # Truncation ~h^2 |L'''| / 6 ~ 1e-10, rounding ~B eps |L| / h ~ 1e-9 (see test_gradients).
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


@pytest.mark.parametrize("dtype", [F32, F64])
def test_losses_on_huge_logits_are_finite_and_exact(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], dtype=dtype)
    labels = np.array([1, 1])
    xent = fn.SoftmaxCrossEntropy()
    # Sample 0: logsumexp = 1e4 and the true logit is -1e4: loss 2e4.  Sample 1: loss 0.
    assert xent.value(z, labels) == pytest.approx(1e4, rel=float(np.finfo(dtype).eps))
    g = xent.grad(z, labels)
    assert g.dtype == dtype
    np.testing.assert_array_equal(g, np.array([[1, -1, 0], [0, 0, 0]], dtype=dtype))

    bce = fn.BinaryCrossEntropy()
    zb = np.array([[1e4, -1e4], [1e4, -1e4]], dtype=dtype)
    tb = np.array([[0, 1], [1, 0]])
    # Per element softplus(z) - t z: wrong-side 1e4, right-side 0; mean 1e4 / 2.
    assert bce.value(zb, tb) == pytest.approx(5e3, rel=float(np.finfo(dtype).eps))
    np.testing.assert_array_equal(bce.grad(zb, tb), np.array([[0.5, -0.5], [0, 0]], dtype=dtype))

    mse = fn.MeanSquaredError()
    assert np.isfinite(mse.value(zb, tb.astype(dtype)))
    assert np.isfinite(mse.grad(zb, tb.astype(dtype))).all()


# ---------------------------------------------------------------------------
# One training step worked by hand
# ---------------------------------------------------------------------------
def _set(layer, w, b):
    layer.w[...] = w
    layer.b[...] = b


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_sgd_step_by_hand_softmax(backend):
    # 3-2-2 network: sigmoid hidden layer, logits out, softmax cross-entropy, batch of 2.
    X = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, -1.0]])
    labels = np.array([1, 0])
    W1 = np.array([[0.1, -0.2], [0.3, 0.4], [-0.5, 0.6]])
    b1 = np.array([[0.01, -0.02]])
    W2 = np.array([[0.7, -0.8], [0.9, 0.25]])
    b2 = np.array([[0.05, -0.05]])
    lr = 0.5

    l1 = fn.DenseLayer("sigmoid", 3, neurons_num=2, dtype=F64)
    l2 = fn.DenseLayer("identity", 2, neurons_num=2, dtype=F64)
    _set(l1, W1, b1)
    _set(l2, W2, b2)
    net = fn.NeuralNetwork([l1, l2], fn.SoftmaxCrossEntropy(), fn.SGD(lr), backend=backend)

    # Forward.
    a1 = X @ W1 + b1
    h = 1.0 / (1.0 + np.exp(-a1))
    z = h @ W2 + b2
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    T = np.array([[0.0, 1.0], [1.0, 0.0]])
    want_loss = -np.mean(np.log(p[[0, 1], labels]))
    # Backward: gradient of the batch mean.
    dz = (p - T) / 2
    dW2 = h.T @ dz
    db2 = dz.sum(axis=0, keepdims=True)
    da1 = (dz @ W2.T) * h * (1.0 - h)
    dW1 = X.T @ da1
    db1 = da1.sum(axis=0, keepdims=True)
    want = [W1 - lr * dW1, b1 - lr * db1, W2 - lr * dW2, b2 - lr * db2]

    got_loss = net.train_step(X, labels)
    # About 20 roundings on values of order 1 along each path: <~ 5e-15 absolute.
    assert got_loss == pytest.approx(want_loss, rel=1e-14)
    for got, exp in zip(net.parameters(), want, strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-14, atol=1e-14)
    # The step changed every parameter (so the comparison above is not vacuous).
    for got, old in zip(net.parameters(), [W1, b1, W2, b2], strict=True):
        assert np.all(got != old)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_momentum_steps_by_hand_mse(backend):
    # 2-2-1 network: relu hidden layer, linear output, MSE, SGD with momentum, batch of 3.
    X = np.array([[1.0, 2.0], [-1.0, 0.5], [0.3, -0.7]])
    y = np.array([[1.0], [-0.5], [0.25]])
    W1 = np.array([[0.5, -0.3], [0.2, 0.8]])
    b1 = np.array([[0.1, 0.2]])
    W2 = np.array([[1.5], [-0.7]])
    b2 = np.array([[0.05]])
    lr, mu = 0.1, 0.9

    l1 = fn.DenseLayer("relu", 2, neurons_num=2, dtype=F64)
    l2 = fn.DenseLayer("identity", 2, neurons_num=1, dtype=F64)
    _set(l1, W1, b1)
    _set(l2, W2, b2)
    net = fn.NeuralNetwork([l1, l2], "mse", fn.SGD(lr, momentum=mu), backend=backend)

    params = [W1.copy(), b1.copy(), W2.copy(), b2.copy()]
    vel = [np.zeros_like(q) for q in params]
    for _ in range(2):
        w1, c1, w2, c2 = params
        a1 = X @ w1 + c1
        assert np.min(np.abs(a1)) > 0.05  # away from relu's kink
        hid = np.maximum(a1, 0.0)
        z = hid @ w2 + c2
        want_loss = np.mean((z - y) ** 2)
        dz = 2.0 * (z - y) / 3  # d(mean over B of (z - y)^2) / dz, C = 1
        grads = [None, None, hid.T @ dz, dz.sum(axis=0, keepdims=True)]
        da1 = (dz @ w2.T) * (a1 > 0)
        grads[0], grads[1] = X.T @ da1, da1.sum(axis=0, keepdims=True)
        vel = [mu * v + g for v, g in zip(vel, grads, strict=True)]
        params = [q - lr * v for q, v in zip(params, vel, strict=True)]
        got_loss = net.train_step(X, y)
        assert got_loss == pytest.approx(want_loss, rel=1e-14)
        # ~30 roundings of O(1) values over two steps.
        for got, exp in zip(net.parameters(), params, strict=True):
            np.testing.assert_allclose(got, exp, rtol=1e-14, atol=1e-14)


# ---------------------------------------------------------------------------
# Optimizer formulas, recomputed inline
# ---------------------------------------------------------------------------
class InlineSGD:
    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.lr, self.mu, self.nesterov, self.wd = lr, momentum, nesterov, weight_decay
        self.v = None

    def step(self, params, grads):
        if self.v is None:
            self.v = [0.0 * p for p in params]
        out = []
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            d = g + self.wd * p
            if self.mu:
                self.v[i] = self.mu * self.v[i] + d
                d = d + self.mu * self.v[i] if self.nesterov else self.v[i]
            out.append(p - self.lr * d)
        return out


class InlineAdam:
    def __init__(self, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, beta1, beta2, eps, weight_decay
        self.m = self.v = None
        self.t = 0

    def step(self, params, grads):
        if self.m is None:
            self.m = [0.0 * p for p in params]
            self.v = [0.0 * p for p in params]
        self.t += 1
        out = []
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            d = g + self.wd * p
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * d
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * d**2
            m_hat = self.m[i] / (1 - self.b1**self.t)
            v_hat = self.v[i] / (1 - self.b2**self.t)
            out.append(p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps))
        return out


OPTIMIZERS = {
    "sgd": dict(lr=0.1),
    "sgd_wd": dict(lr=0.1, weight_decay=0.05),
    "momentum": dict(lr=0.1, momentum=0.9),
    "nesterov": dict(lr=0.1, momentum=0.9, nesterov=True),
    "nesterov_wd": dict(lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.05),
    "adam": dict(lr=0.01),
    "adam_wd": dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05),
}


def make_optimizers(key):
    kwargs = OPTIMIZERS[key]
    if key.startswith("adam"):
        return fn.Adam(**kwargs), InlineAdam(**kwargs)
    return fn.SGD(**kwargs), InlineSGD(**kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("key", list(OPTIMIZERS))
def test_optimizer_step_matches_inline_formula(key, dtype, backend):
    rng = np.random.default_rng(7)
    opt, ref = make_optimizers(key)
    params = [rng.normal(size=(3, 2)).astype(dtype), rng.normal(size=(1, 2)).astype(dtype)]
    want = [p.astype(F64) for p in params]
    start = [p.copy() for p in params]
    kernels = kernels_for(backend)
    for _ in range(3):  # three steps: velocity / moments and Adam's bias correction at t = 1, 2, 3
        grads = [rng.normal(size=p.shape).astype(dtype) for p in params]
        opt.step(kernels, params, grads)
        want = ref.step(want, [g.astype(F64) for g in grads])
        # float64: each step is ~10 roundings of values of order 1 (Adam's m_hat /
        # sqrt(v_hat) is of order 1 and multiplied by lr): error <~ 30 eps over three
        # steps.  float32: the same count in units of eps32 = 1.2e-7 (the reference
        # runs in float64 on the same float32 inputs).
        tol = 30 * np.finfo(dtype).eps
        for p, w in zip(params, want, strict=True):
            assert p.dtype == dtype
            np.testing.assert_allclose(p, w, rtol=tol, atol=tol)
    for p, s in zip(params, start, strict=True):
        assert np.all(p != s)  # every entry moved: the comparison was not of unchanged arrays


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", list(OPTIMIZERS))
def test_train_step_applies_optimizer_to_linear_model(key, backend):
    # A single linear layer with MSE: the gradient has a closed form, so the whole
    # train_step (forward, loss gradient, backward, update) is recomputed here.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6, 3))
    Y = rng.normal(size=(6, 2))
    opt, ref = make_optimizers(key)
    layer = fn.DenseLayer("identity", 3, neurons_num=2, dtype=F64, rng=rng)
    layer.b[...] = rng.normal(size=(1, 2))
    net = fn.NeuralNetwork([layer], "mse", opt, backend=backend)
    params = [layer.w.copy(), layer.b.copy()]
    for _ in range(3):
        w, b = params
        z = X @ w + b
        G = 2.0 * (z - Y) / 2  # per-sample gradient of the mean over C = 2 outputs
        grads = [X.T @ G / 6, G.mean(axis=0, keepdims=True)]
        params = ref.step(params, grads)
        net.train_step(X, Y)
        for got, exp in zip(net.parameters(), params, strict=True):
            np.testing.assert_allclose(got, exp, rtol=1e-13, atol=1e-13)  # ~40 eps over 3 steps


# ---------------------------------------------------------------------------
# mode="gd": full gradient descent in chunks is one step on all the data
# ---------------------------------------------------------------------------
def small_regression_net(lr, seed=0, dtype=F64, backend=None):
    rng = np.random.default_rng(seed)
    layers = [
        fn.DenseLayer("tanh", 4, neurons_num=6, dtype=dtype, rng=rng),
        fn.DenseLayer("softplus", None, neurons_num=5, dtype=dtype, rng=rng),
        fn.DenseLayer("identity", None, neurons_num=2, dtype=dtype, rng=rng),
    ]
    net = fn.NeuralNetwork(layers, "mse", fn.SGD(lr), backend=backend)
    for layer in layers:
        layer.b[...] = rng.normal(0.0, 0.3, layer.b.shape)
    return net


def regression_data(n=50, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = np.stack([np.sin(X[:, 0]) + X[:, 1], X[:, 2] * X[:, 3]], axis=1)
    return X, y


# The gradient over 50 samples summed in another grouping (chunks of 7, then a
# running mean over 8 chunks) differs by a few eps times the sum of |per-sample
# terms| (of order 1); times lr = 0.5 it moves parameters of order 1 by <~1e-14.
GD_TOL = dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shuffle", [False, True])
def test_gd_mode_is_one_step_on_all_data(shuffle, backend):
    X, y = regression_data()
    a = small_regression_net(0.5, backend=backend)
    b = small_regression_net(0.5, backend=backend)
    start = [p.copy() for p in a.parameters()]
    hist = a.fit(X, y, epochs=1, batch_size=7, mode="gd", shuffle=shuffle, progress=False, rng=5)
    loss = b.train_step(X, y)
    for p, q, s in zip(a.parameters(), b.parameters(), start, strict=True):
        assert not np.array_equal(q, s)
        np.testing.assert_allclose(p, q, **GD_TOL)
    # The epoch's loss is the chunk losses weighted by chunk size: the full-batch loss.
    assert hist["loss"][0] == pytest.approx(loss, rel=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gd_mode_two_epochs_are_two_full_steps(backend):
    X, y = regression_data()
    a = small_regression_net(0.5, backend=backend)
    b = small_regression_net(0.5, backend=backend)
    a.fit(X, y, epochs=2, batch_size=7, mode="gd", shuffle=False, progress=False)
    b.train_step(X, y)
    b.train_step(X, y)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_allclose(p, q, **GD_TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gd_mode_does_not_carry_the_previous_gradient(backend):
    # A first gd fit with lr = 0 and huge targets leaves the parameters alone but
    # its (huge) mean gradient in the accumulators; the next gd fit must start its
    # running mean afresh, not from those values.
    X, y = regression_data()
    a = small_regression_net(0.0, backend=backend)
    a.fit(X, y * 1e12, epochs=1, batch_size=7, mode="gd", shuffle=False, progress=False)
    a.optimizer.lr = 0.5
    a.fit(X, y, epochs=1, batch_size=7, mode="gd", shuffle=False, progress=False)
    b = small_regression_net(0.5, backend=backend)
    b.train_step(X, y)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_allclose(p, q, **GD_TOL)


# ---------------------------------------------------------------------------
# Training on the digits data set
# ---------------------------------------------------------------------------
def test_digits_reach_97_percent_test_accuracy():
    from fastnet.examples.digits import build_network, load_split

    (X_train, y_train), (X_test, y_test) = load_split(seed=0)
    net = build_network(hidden=128, seed=0, optimizer=fn.Adam(2e-3))
    hist = net.fit(X_train, y_train, epochs=20, batch_size=32, progress=False, rng=0,
                   validation_data=(X_test, y_test))
    acc = net.evaluate(X_test, y_test)["accuracy"]
    assert acc >= 0.97
    # Accuracy recomputed from the predictions, independently of evaluate().
    assert np.mean(net.predict(X_test) == y_test) == pytest.approx(acc, abs=1e-12)
    assert hist["val_accuracy"][-1] == pytest.approx(acc, abs=1e-12)
    assert hist["loss"][-1] < hist["loss"][0]
    assert set(np.unique(y_test)) == set(range(10))  # a held-out split with every class


# ---------------------------------------------------------------------------
# Reproducibility, persistence, dtypes
# ---------------------------------------------------------------------------
def classifier(seed=0, dtype=F32, backend=None, optimizer=None):
    rng = np.random.default_rng(seed)
    layers = [
        fn.DenseLayer("relu", 6, fn.WeightInit.he_init_gauss, 16, dtype=dtype, rng=rng),
        fn.DenseLayer(fn.LeakyReLU(0.1), None, neurons_num=8, dtype=dtype, rng=rng),
        fn.DenseLayer("identity", None, neurons_num=3, dtype=dtype, rng=rng),
    ]
    optimizer = fn.SGD(0.05, momentum=0.9) if optimizer is None else optimizer
    return fn.NeuralNetwork(layers, fn.SoftmaxCrossEntropy(), optimizer, backend=backend)


def classification_data(n=120, seed=2, dtype=F32):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(dtype)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    return X, y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_seeded_training_is_bitwise_repeatable(dtype, backend):
    X, y = classification_data(dtype=dtype)
    runs = []
    for _ in range(2):
        net = classifier(seed=4, dtype=dtype, backend=backend, optimizer=fn.Adam(0.01))
        hist = net.fit(X, y, epochs=3, batch_size=16, shuffle=True, rng=11, progress=False)
        runs.append((net, hist))
    (a, ha), (b, hb) = runs
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert np.array_equal(p, q)
    assert ha == hb
    # Another shuffling seed gives other parameters: the seed is what is being repeated.
    c = classifier(seed=4, dtype=dtype, backend=backend, optimizer=fn.Adam(0.01))
    c.fit(X, y, epochs=3, batch_size=16, shuffle=True, rng=12, progress=False)
    assert not np.array_equal(a.parameters()[0], c.parameters()[0])


@pytest.mark.parametrize("dtype", [F32, F64])
def test_save_load_round_trip(tmp_path, dtype):
    X, y = classification_data(dtype=dtype)
    net = classifier(seed=1, dtype=dtype, optimizer=fn.Adam(0.02, weight_decay=1e-4))
    net.fit(X, y, epochs=2, batch_size=16, progress=False, rng=0)
    path = net.save(tmp_path / "model")
    assert path.endswith("model.npz")
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary file left behind

    loaded = fn.NeuralNetwork.load(path)
    assert loaded.dtype == dtype
    for p, q in zip(net.parameters(), loaded.parameters(), strict=True):
        assert q.dtype == dtype
        assert np.array_equal(p, q)
    assert [la.activation for la in loaded.layers] == [la.activation for la in net.layers]
    assert loaded.optimizer.config() == net.optimizer.config()
    assert type(loaded.loss) is type(net.loss)
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))


def test_saved_file_has_normal_permissions(tmp_path):
    # The model is written through a temporary file; it must end up with the
    # permissions any new file gets (umask applied), not the temporary's 0600.
    net = classifier()
    path = net.save(tmp_path / "model.npz")
    with open(tmp_path / "plain", "wb"):
        pass
    assert os.stat(path).st_mode == os.stat(tmp_path / "plain").st_mode


def test_failed_save_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    old = classifier(seed=1)
    path = old.save(tmp_path / "model.npz")
    X, _ = classification_data()
    before = old.predict_proba(X)

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        classifier(seed=2).save(path)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    np.testing.assert_array_equal(fn.NeuralNetwork.load(path).predict_proba(X), before)


def test_load_refuses_object_arrays(tmp_path):
    net = classifier()
    path = net.save(tmp_path / "model.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["w0"] = np.array([{"evil": 1}, None], dtype=object)
    bad = tmp_path / "pickled.npz"
    np.savez(bad, **arrays)  # allow_pickle defaults to True when saving
    with pytest.raises(fn.ModelFileError):
        fn.NeuralNetwork.load(bad)
    assert issubclass(fn.ModelFileError, ValueError)


def test_load_refuses_truncated_and_garbage_files(tmp_path):
    path = classifier().save(tmp_path / "model.npz")
    raw = Path(path).read_bytes()
    np.save(tmp_path / "array.npy", np.zeros(3))
    cases = [("truncated.npz", raw[: len(raw) // 2]), ("head.npz", raw[:40]),
             ("garbage.npz", b"this is not a model" * 10), ("empty.npz", b""),
             ("array.npy", (tmp_path / "array.npy").read_bytes())]
    for name, content in cases:
        p = tmp_path / name
        p.write_bytes(content)
        # ModelFileError, and no file left open (a ResourceWarning is an error here).
        with pytest.raises(fn.ModelFileError):
            fn.NeuralNetwork.load(p)
    with pytest.raises(fn.ModelFileError):
        fn.NeuralNetwork.load(tmp_path / "missing.npz")
    with open(path, "rb") as f:  # an open file works as well as a path
        np.testing.assert_array_equal(fn.NeuralNetwork.load(f).parameters()[0], classifier().parameters()[0])


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_load_refuses_other_format_versions(tmp_path, version):
    path = classifier().save(tmp_path / "model.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    config = json.loads(str(arrays["config"]))
    assert config["format_version"] == 1  # the field being tampered with exists
    config["format_version"] = version
    arrays["config"] = np.array(json.dumps(config))
    bad = tmp_path / "other.npz"
    np.savez(bad, **arrays)
    with pytest.raises(fn.ModelFileError, match="version"):
        fn.NeuralNetwork.load(bad)
    fn.NeuralNetwork.load(path)  # the untampered file still loads: the refusal is about the version


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_dtype_is_preserved_end_to_end(dtype, backend):
    other = F64 if dtype == F32 else F32
    X, y = classification_data(dtype=dtype)
    net = classifier(dtype=dtype, backend=backend, optimizer=fn.Adam(0.01))
    assert net.forward(X).dtype == dtype
    assert net.forward(X.astype(other)).dtype == dtype  # the other precision is cast to the network's
    net.train_step(X, y)
    net.fit(X, y, epochs=1, batch_size=32, progress=False, rng=0)
    net.fit(X.astype(other), y, epochs=1, batch_size=32, mode="gd", progress=False, rng=0)
    for p in net.parameters():
        assert p.dtype == dtype
    for g in net.gradients():
        assert g.dtype == dtype
    for m in net.optimizer.state["m"] + net.optimizer.state["v"]:
        assert m.dtype == dtype
    for layer in net.layers:
        assert layer.a.dtype == dtype and layer.y.dtype == dtype
    assert net.predict_proba(X).dtype == dtype
    assert net.loss.grad(net.forward(X), y).dtype == dtype
    reg = small_regression_net(0.01, dtype=dtype, backend=backend)
    Xr, yr = regression_data()
    reg.train_step(Xr.astype(dtype), yr.astype(dtype))
    assert reg.predict(Xr.astype(dtype)).dtype == dtype
    assert all(p.dtype == dtype for p in reg.parameters())


# ---------------------------------------------------------------------------
# fit: history, progress output, divergence
# ---------------------------------------------------------------------------
def test_fit_history_keys_and_lengths():
    X, y = classification_data()
    net = classifier()
    hist = net.fit(X, y, epochs=4, batch_size=32, progress=False, rng=0)
    assert set(hist) == {"loss", "accuracy"}
    assert all(len(v) == 4 for v in hist.values())
    hist = net.fit(X, y, epochs=3, batch_size=32, progress=False, rng=0, validation_data=(X[:20], y[:20]))
    assert set(hist) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in hist.values())
    Xr, yr = regression_data()
    hist = small_regression_net(0.01).fit(Xr, yr, epochs=2, progress=False, validation_data=(Xr, yr))
    assert set(hist) == {"loss", "val_loss"}
    assert all(len(v) == 2 and all(isinstance(x, float) for x in v) for v in hist.values())


@pytest.mark.parametrize("mode", ["sgd", "gd"])
def test_fit_history_with_zero_learning_rate_is_the_full_data_score(mode):
    # With lr = 0 nothing moves, so each epoch's loss (batch losses weighted by batch
    # size) and accuracy equal the full-data values.  Float64; the regrouped mean
    # differs by a few eps.
    X, y = classification_data(dtype=F64)
    net = classifier(dtype=F64, optimizer=fn.SGD(0.0))
    hist = net.fit(X, y, epochs=2, batch_size=32, mode=mode, progress=False, rng=0)
    scores = net.evaluate(X, y)
    assert hist["loss"] == pytest.approx([scores["loss"]] * 2, rel=1e-13)
    assert hist["accuracy"] == pytest.approx([scores["accuracy"]] * 2, abs=1e-12)
    probs = net.predict_proba(X)
    want = -np.mean(np.log(probs[np.arange(len(y)), y]))
    # -log of rounded probabilities: a few eps absolute per sample, on a loss of order 1.
    assert scores["loss"] == pytest.approx(want, rel=1e-12)
    assert scores["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == y), abs=1e-12)


def test_fit_without_progress_prints_nothing(capsys):
    X, y = classification_data()
    classifier().fit(X, y, epochs=2, batch_size=16, progress=False, rng=0, validation_data=(X, y))
    out, err = capsys.readouterr()
    assert out == "" and err == ""


# Divergence overflows on the way to a non-finite loss, so numpy warns before fastnet
# raises; those warnings are expected here (pytest otherwise turns them into errors).
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("mode", ["sgd", "gd"])
def test_divergence_raises_naming_epoch_and_step(mode):
    X, y = regression_data(n=60)
    X = X * 1e3  # unnormalised
    net = small_regression_net(1e6)
    with pytest.raises(FloatingPointError, match=r"epoch \d+, step \d+"):
        net.fit(X, y, epochs=20, batch_size=10, mode=mode, shuffle=False, progress=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_names_the_failing_step_and_skips_its_update():
    # A linear float32 model; batch 3 (rows 20-29) holds a sample of size 1e20,
    # whose squared error (~1e40) overflows float32: the loss of epoch 1, step 3
    # is inf, and steps 1 and 2 are ordinary.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype(F32)
    X[25] = 1e20
    y = rng.normal(size=(40, 1)).astype(F32)

    def linear():
        layer = fn.DenseLayer("identity", 4, neurons_num=1, dtype=F32, rng=1)
        layer.w[...] = 0.5  # so that the huge sample's output is ~2e20, not ~0 by chance
        return fn.NeuralNetwork([layer], "mse", fn.SGD(0.01))

    net = linear()
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 3\b"):
        net.fit(X, y, epochs=2, batch_size=10, shuffle=False, progress=False)
    ref = linear()
    ref.train_step(X[:10], y[:10])
    ref.train_step(X[10:20], y[10:20])
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        assert np.array_equal(p, q)  # steps 1 and 2 applied, step 3 not


# ---------------------------------------------------------------------------
# Memory layout and chunked prediction
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_and_fortran_inputs_give_identical_results(backend):
    X, y = classification_data(dtype=F64)
    Xf = np.asfortranarray(X)
    wide = np.zeros((X.shape[0] * 2, X.shape[1] * 3))
    wide[::2, ::3] = X
    Xs = wide[::2, ::3]  # strided view
    yr = np.zeros(2 * len(y), dtype=int)
    yr[::2] = y
    ys = yr[::2]
    assert not Xf.flags.c_contiguous and not Xs.flags.c_contiguous and not ys.flags.c_contiguous

    ref = classifier(dtype=F64, backend=backend)
    out = ref.forward(X).copy()
    ref_loss = ref.train_step(X, y)
    for Xv, yv in [(Xf, y), (Xs, ys)]:
        net = classifier(dtype=F64, backend=backend)
        np.testing.assert_array_equal(net.forward(Xv), out)
        assert net.train_step(Xv, yv) == ref_loss
        for p, q in zip(net.parameters(), ref.parameters(), strict=True):
            assert np.array_equal(p, q)


def test_predict_on_more_rows_than_a_chunk_matches_forward():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2500, 6))
    net = classifier(dtype=F64)
    proba = net.predict_proba(X)
    assert proba.shape == (2500, 3)
    for s in (0, 1000, 2400):
        out = net.forward(X[s:s + 100])
        e = np.exp(out - out.max(axis=1, keepdims=True))
        # Same products on other batch sizes: equal up to a few eps of O(1) values.
        np.testing.assert_allclose(proba[s:s + 100], e / e.sum(axis=1, keepdims=True), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(net.predict(X), proba.argmax(axis=1))

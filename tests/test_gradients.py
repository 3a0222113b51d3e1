"""Finite-difference gradient checks in float64, over whole networks and single layers.

The analytic gradient of the batch loss ``loss.value(net.forward(X), y)`` (the
mean over the batch) is ``net.backward(loss.grad(out, y))`` followed by each
layer's ``dw`` and ``db``.  It is compared with central differences taken on
every weight and every bias of every layer, for every activation in the hidden
layers and every loss.

Step size and tolerance.  A central difference of a smooth function has a
truncation error of about h^2 |L'''| / 6 and a rounding error of about
k eps |L| / h, where eps = 2.2e-16 and k (the relative error of one evaluation
of L, in units of eps) is a few tens for these small networks.  The optimum is
near h = eps^(1/3) ~ 6e-6; with h = 1e-5 (scaled by max(1, |p|)), parameters of
order 1 and |L'''| of order 1 the truncation term is ~2e-11 and the rounding
term ~1e-9 |L|.  Gradients here are of order 1e-2 to 1, so a relative error of
1e-6 (measured against the largest gradient entry of each array, so that
entries near zero are judged on the array's scale) leaves a margin of 100x or
more over the expected error, while any mistake in a formula (a missing factor
1/B, 1/C or f'(a), a transposed product) produces an error of order 1.

The kinks of relu and leaky_relu (and the jump of elu's second derivative) at
a = 0 would break the expansion above.  The data are drawn so that no
pre-activation is within 1e-3 of 0, and every perturbed evaluation checks that
no pre-activation changed sign: a difference never straddles a kink.
"""

import numpy as np
import pytest

import fastnet as fn

F64 = np.float64
H = 1e-5  # relative step of the central differences; see the module docstring
RTOL = 1e-6  # relative to the largest entry of each gradient array; see above
MARGIN = 1e-3  # minimum |pre-activation|; a step of H moves one by <~1e-4 (the sign check is the guarantee)

ACTIVATIONS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu"]
# The activations with a parameter, also at a value other than their default.
ACTIVATION_OBJECTS = [*ACTIVATIONS, fn.LeakyReLU(0.2), fn.ELU(0.5)]
BACKENDS = fn.available_backends()

N_IN, HIDDEN, C, B = 5, (7, 6), 3, 5


def _id(value):
    return value if isinstance(value, str) else repr(value)


def build_net(hidden, out_act, loss, rng, backend):
    """5-7-6-3 network in float64 with random weights and random (non-zero) biases."""
    sizes = [N_IN, *HIDDEN, C]
    acts = [hidden, hidden, out_act]
    layers = []
    for i, act in enumerate(acts):
        layer = fn.DenseLayer(act, sizes[i], neurons_num=sizes[i + 1], dtype=F64, rng=rng)
        layer.b[...] = rng.normal(0.0, 0.5, layer.b.shape)
        layers.append(layer)
    return fn.NeuralNetwork(layers, loss, fn.SGD(0.1), backend=backend)


def targets(loss_name, rng):
    if loss_name == "mse":
        return rng.normal(0.0, 1.0, (B, C))
    if loss_name == "softmax_labels":
        return rng.integers(0, C, B)
    if loss_name == "softmax_soft":
        t = rng.uniform(0.1, 1.0, (B, C))
        return t / t.sum(axis=1, keepdims=True)
    if loss_name == "bce_labels":
        return rng.integers(0, 2, (B, C))
    if loss_name == "bce_soft":
        return rng.uniform(0.0, 1.0, (B, C))
    raise AssertionError(loss_name)


LOSS_OBJECTS = {
    "mse": fn.MeanSquaredError,
    "softmax_labels": fn.SoftmaxCrossEntropy,
    "softmax_soft": fn.SoftmaxCrossEntropy,
    "bce_labels": fn.BinaryCrossEntropy,
    "bce_soft": fn.BinaryCrossEntropy,
}

# MSE with every output activation; the cross-entropies take logits (identity output).
LOSS_CASES = (
    [("mse", out) for out in ACTIVATIONS]
    + [(name, "identity") for name in ("softmax_labels", "softmax_soft", "bce_labels", "bce_soft")]
)


def signs(net):
    return [np.signbit(layer.a).copy() for layer in net.layers]


def min_abs_preactivation(net):
    return min(float(np.min(np.abs(layer.a))) for layer in net.layers)


def setup_case(hidden, out_act, loss_name, backend):
    """Network, loss, X, y with every pre-activation at least MARGIN away from 0.

    Seeds are tried in order until the margin holds, so the case is deterministic.
    """
    for seed in range(100):
        rng = np.random.default_rng(seed)
        loss = LOSS_OBJECTS[loss_name]()
        net = build_net(hidden, out_act, loss, rng, backend)
        X = rng.normal(0.0, 1.0, (B, N_IN))
        y = targets(loss_name, rng)
        net.forward(X)
        if min_abs_preactivation(net) > MARGIN:
            return net, loss, X, y
    raise AssertionError("no seed gives pre-activations away from 0")  # pragma: no cover


def numerical_gradient(net, loss, X, y, p, base_signs):
    """Central differences of the batch loss with respect to every entry of ``p``."""
    g = np.empty_like(p)
    for idx in np.ndindex(p.shape):
        orig = p[idx]
        h = H * max(1.0, abs(orig))
        p[idx] = orig + h
        up = loss.value(net.forward(X), y)
        assert all(np.array_equal(s, t) for s, t in zip(signs(net), base_signs, strict=True)), (
            "a perturbation moved a pre-activation across 0"
        )
        p[idx] = orig - h
        down = loss.value(net.forward(X), y)
        assert all(np.array_equal(s, t) for s, t in zip(signs(net), base_signs, strict=True)), (
            "a perturbation moved a pre-activation across 0"
        )
        p[idx] = orig
        # The actual distance between the two points, not 2h: orig +- h are rounded.
        g[idx] = (up - down) / ((orig + h) - (orig - h))
    return g


def assert_gradient_close(analytic, numeric, what):
    scale = float(np.max(np.abs(numeric)))
    # The check is meaningless if the whole array's gradient is ~0: make sure it is not.
    assert scale > 1e-3, f"{what}: gradient too small to check ({scale})"
    err = float(np.max(np.abs(analytic - numeric))) / scale
    assert err < RTOL, f"{what}: relative error {err:.3g} (largest entry {scale:.3g})"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("loss_name", "out_act"), LOSS_CASES)
@pytest.mark.parametrize("hidden", ACTIVATION_OBJECTS, ids=_id)
def test_network_gradient_matches_central_differences(hidden, loss_name, out_act, backend):
    net, loss, X, y = setup_case(hidden, out_act, loss_name, backend)

    out = net.forward(X)
    base_signs = signs(net)
    net.backward(loss.grad(out, y))
    analytic = [(i, name, np.array(g, copy=True))
                for i, layer in enumerate(net.layers)
                for name, g in (("w", layer.dw), ("b", layer.db))]
    params_before = [p.copy() for p in net.parameters()]

    for i, name, g in analytic:
        p = getattr(net.layers[i], name)
        numeric = numerical_gradient(net, loss, X, y, p, base_signs)
        assert g.shape == p.shape
        assert_gradient_close(g, numeric, f"layer {i} d{name}")

    # The differences restored every parameter exactly.
    for p, q in zip(net.parameters(), params_before, strict=True):
        assert np.array_equal(p, q)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ACTIVATION_OBJECTS, ids=_id)
def test_layer_input_and_parameter_gradients(act, backend):
    """DenseLayer.backward_pass: dx is the gradient of sum(dy * f(x @ w + b)) with
    respect to x (per sample); dw, db that of the same sum divided by B."""
    for seed in range(100):
        rng = np.random.default_rng(seed)
        layer = fn.DenseLayer(act, 4, neurons_num=3, dtype=F64, rng=rng, backend=backend)
        layer.b[...] = rng.normal(0.0, 0.5, layer.b.shape)
        x = rng.normal(0.0, 1.0, (B, 4))
        dy = rng.normal(0.0, 1.0, (B, 3))
        layer.forward_pass(x)
        if np.min(np.abs(layer.a)) > MARGIN:
            break
    base = np.signbit(layer.a).copy()

    def objective(xx):
        value = float(np.sum(dy * layer.forward_pass(xx)))
        assert np.array_equal(np.signbit(layer.a), base), "a step moved a pre-activation across 0"
        return value

    layer.forward_pass(x.copy())
    dx = np.array(layer.backward_pass(dy), copy=True)
    dw, db = layer.dw.copy(), layer.db.copy()
    assert dx.shape == x.shape

    num_dx = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        h = H * max(1.0, abs(x[idx]))
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num_dx[idx] = (objective(xp) - objective(xm)) / (xp[idx] - xm[idx])
    assert_gradient_close(dx, num_dx, "dx")

    for name, analytic in (("w", dw), ("b", db)):
        p = getattr(layer, name)
        num = np.empty_like(p)
        for idx in np.ndindex(p.shape):
            orig = p[idx]
            h = H * max(1.0, abs(orig))
            p[idx] = orig + h
            up = objective(x)
            p[idx] = orig - h
            down = objective(x)
            p[idx] = orig
            num[idx] = (up - down) / ((orig + h) - (orig - h)) / B
        assert_gradient_close(analytic, num, f"d{name}")

"""Hypothesis property tests: shapes, dtypes and precision over random networks.

Random batch sizes 1..20, widths 1..20, float32 or float64, a random activation
per layer and a random loss; the data come from a seeded generator drawn by
hypothesis, so a failing example is replayed exactly.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnet as fn

F32, F64 = np.float32, np.float64
ACTIVATIONS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu"]
LOSSES = {"mse": fn.MeanSquaredError, "softmax_xent": fn.SoftmaxCrossEntropy,
          "bce_logits": fn.BinaryCrossEntropy}
BACKENDS = fn.available_backends()

SETTINGS = settings(max_examples=50, deadline=None)


@st.composite
def cases(draw, dtypes=(F32, F64)):
    """(batch, sizes [n_in, ..., C], activations, loss name, dtype, backend, seed)."""
    batch = draw(st.integers(1, 20))
    sizes = draw(st.lists(st.integers(1, 20), min_size=2, max_size=4))
    acts = [draw(st.sampled_from(ACTIVATIONS)) for _ in sizes[1:]]
    loss = draw(st.sampled_from(sorted(LOSSES)))
    if loss != "mse":
        acts[-1] = "identity"  # the cross-entropies take logits
    dtype = draw(st.sampled_from(dtypes))
    backend = draw(st.sampled_from(BACKENDS))
    seed = draw(st.integers(0, 2**32 - 1))
    return batch, sizes, acts, loss, dtype, backend, seed


def build(sizes, acts, loss, dtype, backend, seed):
    rng = np.random.default_rng(seed)
    layers = [fn.DenseLayer(act, sizes[i], neurons_num=sizes[i + 1], dtype=dtype, rng=rng)
              for i, act in enumerate(acts)]
    for layer in layers:
        layer.b[...] = rng.normal(0.0, 0.5, layer.b.shape)
    return fn.NeuralNetwork(layers, LOSSES[loss](), fn.SGD(0.01), backend=backend)


def data(batch, sizes, loss, dtype, seed):
    rng = np.random.default_rng(seed + 1)
    X = rng.normal(size=(batch, sizes[0])).astype(dtype)
    C = sizes[-1]
    if loss == "mse":
        y = rng.normal(size=(batch, C)).astype(dtype)
    elif loss == "softmax_xent":
        y = rng.integers(0, C, batch)
    else:
        y = rng.integers(0, 2, batch if C == 1 else (batch, C))
    return X, y


@SETTINGS
@given(cases())
def test_forward_and_backward_shapes_and_dtypes(case):
    batch, sizes, acts, loss, dtype, backend, seed = case
    net = build(sizes, acts, loss, dtype, backend, seed)
    X, _ = data(batch, sizes, loss, dtype, seed)
    out = net.forward(X)
    assert out.shape == (batch, sizes[-1])
    assert out.dtype == dtype
    assert np.isfinite(out).all()
    other = F64 if dtype == F32 else F32
    assert net.forward(X.astype(other)).dtype == dtype

    dout = np.random.default_rng(seed).normal(size=out.shape).astype(dtype)
    net.forward(X)
    net.backward(dout)
    for i, layer in enumerate(net.layers):
        n_in, n_out = sizes[i], sizes[i + 1]
        assert layer.w.shape == layer.dw.shape == (n_in, n_out)
        assert layer.b.shape == layer.db.shape == (1, n_out)
        assert layer.dw.dtype == layer.db.dtype == layer.w.dtype == layer.b.dtype == dtype
        assert layer.a.shape == layer.y.shape == (batch, n_out)
        if i == 0:
            assert layer.dx is None  # the first layer skips its input gradient
        else:
            assert layer.dx.shape == (batch, n_in)
            assert layer.dx.dtype == dtype
        assert np.isfinite(layer.dw).all() and np.isfinite(layer.db).all()


@SETTINGS
@given(cases())
def test_single_layer_backward_pass_shapes(case):
    batch, sizes, acts, _, dtype, backend, seed = case
    n_in, n_out = sizes[0], sizes[1]
    layer = fn.DenseLayer(acts[0], n_in, neurons_num=n_out, dtype=dtype, rng=seed, backend=backend)
    rng = np.random.default_rng(seed)
    y = layer.forward_pass(rng.normal(size=(batch, n_in)).astype(dtype))
    assert y.shape == (batch, n_out) and y.dtype == dtype
    dx = layer.backward_pass(rng.normal(size=(batch, n_out)).astype(dtype))
    assert dx is layer.dx
    assert dx.shape == (batch, n_in) and dx.dtype == dtype
    assert layer.dw.shape == (n_in, n_out) and layer.db.shape == (1, n_out)
    assert layer.backward_pass(np.ones((batch, n_out), dtype), compute_dx=False) is None


@SETTINGS
@given(cases())
def test_predict_shapes_and_train_step_loss(case):
    batch, sizes, acts, loss, dtype, backend, seed = case
    net = build(sizes, acts, loss, dtype, backend, seed)
    X, y = data(batch, sizes, loss, dtype, seed)
    C = sizes[-1]
    pred = net.predict(X)
    if loss == "mse":
        assert pred.shape == (batch, C) and pred.dtype == dtype
    elif loss == "softmax_xent":
        assert pred.shape == (batch,) and pred.dtype.kind in "iu"
        assert ((0 <= pred) & (pred < C)).all()
    else:
        assert pred.shape == ((batch,) if C == 1 else (batch, C)) and pred.dtype.kind in "iu"
        assert np.isin(pred, [0, 1]).all()
    if loss != "mse":
        proba = net.predict_proba(X)
        assert proba.shape == (batch, C) and proba.dtype == dtype
        assert ((0 <= proba) & (proba <= 1)).all()
        if loss == "softmax_xent":
            # A sum of C rounded terms of at most 1: within C eps of 1 (plus the division's ulp).
            np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=(C + 2) * np.finfo(dtype).eps)
        logits = net.forward(X)
        # Documented: the class of the largest logit; for binary, 1 where the logit is > 0.
        want = logits.argmax(axis=1) if loss == "softmax_xent" else (logits > 0).reshape(pred.shape)
        assert np.array_equal(pred, want)

    value = net.train_step(X, y)
    assert type(value) is float
    assert np.isfinite(value) and value >= 0  # all three losses are non-negative
    for p in net.parameters():
        assert p.dtype == dtype and np.isfinite(p).all()


# Unit roundoff of float32 (plus float64's, for the reference computed in float64).
U32 = 2.0**-24 + 2.0**-53
LIPSCHITZ = 1.13  # max |f'| over the activations: gelu's 1.129; the others <= 1 (default alphas)


def gamma(k):
    """Higham's gamma_k = k u / (1 - k u): bound on the relative error of a sum of k
    rounded products, in any order (with or without FMA)."""
    return k * U32 / (1 - k * U32)


@SETTINGS
@given(cases(dtypes=(F32,)))
def test_float32_forward_agrees_with_float64_within_a_derived_bound(case):
    batch, sizes, acts, loss, _, backend, seed = case
    net32 = build(sizes, acts, loss, F32, backend, seed)
    net64 = build(sizes, acts, loss, F64, backend, seed)
    for l32, l64 in zip(net32.layers, net64.layers, strict=True):
        l64.w[...] = l32.w  # the same (float32-representable) weights in both
        l64.b[...] = l32.b
    X, _ = data(batch, sizes, loss, F32, seed)
    out32 = net32.forward(X).astype(F64)
    net64.forward(X.astype(F64))

    # Error bound, layer by layer, from the float64 pass's values:
    #   a = x @ w + b is a sum of n_in + 1 terms: |a32 - a| <= e_x @ |w| + gamma(n_in + 1) *
    #   ((|x| + e_x) @ |w| + |b|), the first term carrying the error e_x of the input;
    #   y = f(a): |y32 - y| <= L |a32 - a| + 16 u (|a| + |y| + |a32 - a|), the last term the
    #   rounding of the activation itself (a few ulps of y, or of a for gelu's a * s).
    err_x = np.zeros((batch, sizes[0]))
    x = X.astype(F64)
    for layer in net64.layers:
        n_in = layer.w.shape[0]
        aw, ab = np.abs(layer.w), np.abs(layer.b)
        err_a = err_x @ aw + gamma(n_in + 1) * ((np.abs(x) + err_x) @ aw + ab)
        err_x = LIPSCHITZ * err_a + 16 * U32 * (np.abs(layer.a) + np.abs(layer.y) + err_a)
        x = layer.y
    diff = np.abs(out32 - net64.layers[-1].y)
    assert (diff <= err_x).all(), f"largest excess {np.max(diff - err_x):.3g}"

"""Bad input: every case raises a clear TypeError or ValueError and changes nothing.

"Clear" means the message names what was expected and what was given; the
``match`` patterns below look for both.  "Changes nothing" means every
parameter array, every optimizer state array and Adam's step count are
bitwise the same after the refused call, on networks that have already taken
a few steps (so the optimizer state is not its initial zeros).
"""

import re

import numpy as np
import pytest

import fastnet as fn
from fastnet.backend import kernels_for

_ref = kernels_for("numpy")  # the reference kernels, fastnet.kernels.numpy

N_IN, N_HIDDEN, N_OUT, BATCH = 4, 5, 3, 6
OPTIMIZERS = ("sgd_momentum", "adam")
LOSS_KIND = {"softmax_xent": "softmax", "bce_logits": "bce", "mse": "mse"}


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(BATCH, N_IN)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2])
    targets = {
        "softmax": labels,
        "bce": (rng.random((BATCH, N_OUT)) > 0.5).astype(np.float32),
        "mse": rng.normal(size=(BATCH, N_OUT)).astype(np.float32),
    }
    return X, targets


X_GOOD, Y_GOOD = _data()


def make_optimizer(kind):
    if kind == "sgd_momentum":
        return fn.SGD(0.05, momentum=0.9)
    return fn.Adam(0.01)


def make_net(opt_kind="sgd_momentum", loss_kind="softmax", dtype=np.float32, seed=0):
    loss = {"softmax": fn.SoftmaxCrossEntropy(), "bce": fn.BinaryCrossEntropy(),
            "mse": fn.MeanSquaredError()}[loss_kind]
    layers = [
        fn.DenseLayer("tanh", N_IN, neurons_num=N_HIDDEN, dtype=dtype, rng=seed, backend="numpy"),
        fn.DenseLayer("identity", neurons_num=N_OUT, dtype=dtype, rng=seed + 1, backend="numpy"),
    ]
    return fn.NeuralNetwork(layers, loss, make_optimizer(opt_kind), backend="numpy")


def make_trained(opt_kind, loss_kind="softmax"):
    """A network that has taken two steps, with non-trivial optimizer state."""
    net = make_net(opt_kind, loss_kind)
    for _ in range(2):
        net.train_step(X_GOOD, Y_GOOD[loss_kind])
    state = net.optimizer.state
    if opt_kind == "adam":
        assert state["t"] == 2
        assert all(np.any(m != 0) for m in state["m"])
    else:
        assert all(np.any(v != 0) for v in state)
    return net


def snapshot(net):
    """Copies of everything a refused call must leave alone."""
    state = net.optimizer.state
    if isinstance(state, dict):  # Adam
        opt = {"t": state["t"], "m": [a.copy() for a in state["m"]], "v": [a.copy() for a in state["v"]]}
    else:  # SGD: one velocity per parameter
        opt = [a.copy() for a in state]
    return {"params": [p.copy() for p in net.parameters()], "opt": opt,
            "config": net.optimizer.config()}


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_unchanged(net, before):
    params = net.parameters()
    assert len(params) == len(before["params"])
    for i, (p, q) in enumerate(zip(params, before["params"], strict=True)):
        assert _same_bits(p, q), f"parameter {i} changed"
    state = net.optimizer.state
    if isinstance(before["opt"], dict):
        assert state["t"] == before["opt"]["t"], "Adam's step count changed"
        for key in ("m", "v"):
            for i, (a, b) in enumerate(zip(state[key], before["opt"][key], strict=True)):
                assert _same_bits(a, b), f"Adam {key}[{i}] changed"
    else:
        for i, (a, b) in enumerate(zip(state, before["opt"], strict=True)):
            assert _same_bits(a, b), f"SGD velocity {i} changed"
    assert net.optimizer.config() == before["config"]


def assert_refused(net, call, exc, match):
    before = snapshot(net)
    with pytest.raises(exc, match=match):
        call()
    assert_unchanged(net, before)


# -- inputs X ------------------------------------------------------------------------------

def _with(value, where=(0, 0), dtype=np.float32):
    X = X_GOOD.astype(dtype)
    X[where] = value
    return X


X_CASES = [
    ("too_many_features", np.ones((BATCH, N_IN + 1), np.float32), ValueError,
     r"5 features per row, expected 4"),
    ("too_few_features", np.ones((BATCH, N_IN - 1), np.float32), ValueError,
     r"3 features per row, expected 4"),
    ("1d", np.ones(N_IN, np.float32), ValueError, r"must be 2-D \(batch, features\), got .*shape \(4,\)"),
    ("3d", np.ones((2, BATCH, N_IN), np.float32), ValueError,
     r"must be 2-D \(batch, features\), got .*shape \(2, 6, 4\)"),
    ("0d", np.float32(1.0), ValueError, r"must be 2-D \(batch, features\), got .*shape \(\)"),
    ("empty_batch", np.ones((0, N_IN), np.float32), ValueError,
     r"empty batch \(shape \(0, 4\)\).*at least 1"),
    ("int", np.ones((BATCH, N_IN), np.int64), TypeError, r"floating-point array, got array of dtype int64"),
    ("int_list", [[1, 2, 3, 4]] * BATCH, TypeError, r"floating-point array, got array of dtype int64"),
    ("bool", np.ones((BATCH, N_IN), bool), TypeError, r"floating-point array, got array of dtype bool"),
    ("complex", np.ones((BATCH, N_IN), np.complex128), TypeError,
     r"floating-point array, got array of dtype complex128"),
    ("object", np.ones((BATCH, N_IN), object), TypeError, r"numeric array, got array of dtype object"),
    ("string", np.full((BATCH, N_IN), "1.0"), TypeError, r"numeric array, got array of dtype <U3"),
    ("none", None, TypeError, r"numeric array, got array of dtype object"),
    ("ragged", [[1.0, 2.0, 3.0, 4.0], [1.0]], TypeError, r"must be an array, got list"),
    ("nan", _with(np.nan), ValueError, r"contains NaN or inf; expected finite"),
    ("inf", _with(np.inf, (3, 2)), ValueError, r"contains NaN or inf; expected finite"),
    ("minus_inf", _with(-np.inf, (5, 3)), ValueError, r"contains NaN or inf; expected finite"),
    ("nan_float64", _with(np.nan, dtype=np.float64), ValueError, r"contains NaN or inf; expected finite"),
    # finite in float64, inf once cast to the network's float32
    ("overflows_float32", _with(1e300, dtype=np.float64), ValueError,
     r"beyond the range of float32 \(largest magnitude 1e\+300\).*cast from float64"),
]


def _fit(mode, **kw):
    def call(net, X, y):
        return net.fit(X, y, epochs=2, batch_size=4, mode=mode, progress=False, rng=0, **kw)
    return call


XY_METHODS = {
    "train_step": lambda net, X, y: net.train_step(X, y),
    "fit_sgd": _fit("sgd"),
    "fit_gd": _fit("gd"),
    "fit_validation_data": lambda net, X, y: net.fit(
        X_GOOD, Y_GOOD[LOSS_KIND[net.loss.name]], epochs=1, batch_size=4, progress=False, rng=0,
        validation_data=(X, y)),
    "evaluate": lambda net, X, y: net.evaluate(X, y),
}
X_METHODS = {
    "predict": lambda net, X: net.predict(X),
    "predict_proba": lambda net, X: net.predict_proba(X),
    "forward": lambda net, X: net.forward(X),
}


@pytest.fixture(params=OPTIMIZERS)
def opt_kind(request):
    return request.param


@pytest.fixture
def trained_net(opt_kind):
    return make_trained(opt_kind, "softmax")


@pytest.mark.parametrize("method", list(XY_METHODS) + list(X_METHODS))
@pytest.mark.parametrize(("X", "exc", "match"), [c[1:] for c in X_CASES], ids=[c[0] for c in X_CASES])
def test_bad_inputs_refused(trained_net, method, X, exc, match):
    if method in XY_METHODS:
        def call():
            return XY_METHODS[method](trained_net, X, Y_GOOD["softmax"])
    else:
        def call():
            return X_METHODS[method](trained_net, X)
    assert_refused(trained_net, call, exc, match)


# -- targets y -------------------------------------------------------------------------------

def _onehot(rows):
    return np.array(rows, dtype=np.float32)


_ONEHOT = np.eye(N_OUT, dtype=np.float32)[Y_GOOD["softmax"]]
_BCE_NAN = Y_GOOD["bce"].copy()
_BCE_NAN[2, 1] = np.nan
_MSE_INF = Y_GOOD["mse"].copy()
_MSE_INF[4, 0] = np.inf

Y_CASES = [
    # softmax cross-entropy: integer labels of shape (B,) or one-hot rows of shape (B, C)
    ("softmax", "label_too_big", np.array([0, 1, 2, 3, 0, 1]), ValueError,
     r"class labels must be in \[0, 3\), got values from 0 to 3"),
    ("softmax", "label_negative", np.array([0, -1, 2, 0, 1, 2]), ValueError,
     r"class labels must be in \[0, 3\), got values from -1 to 2"),
    ("softmax", "label_negative_int8", np.array([0, -1, 2, 0, 1, 2], np.int8), ValueError,
     r"class labels must be in \[0, 3\), got values from -1 to 2"),
    ("softmax", "label_too_big_uint64", np.array([0, 1, 2, 3, 0, 1], np.uint64), ValueError,
     r"class labels must be in \[0, 3\), got values from 0 to 3"),
    ("softmax", "label_negative_strided", np.array([0, 9, -1, 9, 2, 9, 0, 9, 1, 9, 2, 9])[::2], ValueError,
     r"class labels must be in \[0, 3\), got values from -1 to 2"),
    ("softmax", "float_labels", np.array([0.0, 1, 2, 0, 1, 2]), TypeError,
     r"class labels must be integers, got array of dtype float64"),
    ("softmax", "bool_labels", np.array([True, False] * 3), TypeError,
     r"class labels must be integers, got array of dtype bool"),
    ("softmax", "string_labels", np.array(["0", "1", "2"] * 2), TypeError,
     r"numeric array, got array of dtype <U1"),
    ("softmax", "object_labels", np.array([0, 1, 2] * 2, dtype=object), TypeError,
     r"numeric array, got array of dtype object"),
    ("softmax", "too_few_labels", np.array([0, 1, 2, 0, 1]), ValueError,
     r"expected 6 labels to match the batch, got 5"),
    ("softmax", "label_column", np.array([[0], [1], [2]] * 2), ValueError,
     r"shape \(6, 3\) to match the output, got .*shape \(6, 1\)"),
    ("softmax", "onehot_too_wide", np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]], ValueError,
     r"shape \(6, 3\) to match the output, got .*shape \(6, 4\)"),
    ("softmax", "onehot_3d", _ONEHOT[:, :, None], ValueError,
     r"shape \(6, 3\) to match the output, got .*shape \(6, 3, 1\)"),
    ("softmax", "onehot_sum_2", _onehot([[1, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]),
     ValueError, r"rows that sum to 1, got row 2 with sum 2\.0"),
    ("softmax", "onehot_sum_0", _onehot([[1, 0, 0], [0, 0, 0], [0, 0, 1]] * 2), ValueError,
     r"rows that sum to 1, got row 1 with sum 0\.0"),
    ("softmax", "onehot_negative", _onehot([[1, 0, 0], [1.5, -0.5, 0], [0, 0, 1]] * 2), ValueError,
     r"non-negative rows .* got row 1 with sum 1\.0 and minimum -0\.5"),
    ("softmax", "onehot_nan", np.where(_ONEHOT == 1, np.nan, 0), ValueError, r"y contains NaN or inf"),
    ("softmax", "onehot_complex", _ONEHOT.astype(np.complex64), TypeError,
     r"one-hot targets must be numeric, got array of dtype complex64"),
    ("softmax", "onehot_bool", _ONEHOT.astype(bool), TypeError,
     r"one-hot targets must be numeric, got array of dtype bool"),
    # binary cross-entropy: 0/1 labels or probabilities in [0, 1], shape (B, C)
    ("bce", "above_1", Y_GOOD["bce"] * 2, ValueError, r"must lie in \[0, 1\], got values from 0\.0 to 2\.0"),
    ("bce", "int_2", Y_GOOD["bce"].astype(np.int64) * 2, ValueError,
     r"must lie in \[0, 1\], got values from 0\.0 to 2\.0"),
    ("bce", "negative", Y_GOOD["bce"] - 0.5, ValueError,
     r"must lie in \[0, 1\], got values from -0\.5 to 0\.5"),
    ("bce", "nan", _BCE_NAN, ValueError, r"y contains NaN or inf"),
    ("bce", "inf", np.where(Y_GOOD["bce"] == 1, np.inf, 0), ValueError, r"y contains NaN or inf"),
    ("bce", "1d_for_3_outputs", Y_GOOD["bce"][:, 0], ValueError,
     r"shape \(6, 3\) to match the output, got .*shape \(6,\)"),
    ("bce", "wrong_batch", Y_GOOD["bce"][:5], ValueError,
     r"shape \(6, 3\) to match the output, got .*\(5, 3\)"),
    ("bce", "complex", Y_GOOD["bce"].astype(np.complex128), TypeError,
     r"float or integer 0/1, got array of dtype complex128"),
    ("bce", "string", Y_GOOD["bce"].astype(str), TypeError, r"numeric array, got array of dtype <U"),
    # mean squared error: float targets of shape (B, C)
    ("mse", "int", np.ones((BATCH, N_OUT), np.int64), TypeError,
     r"mse targets must be floating-point, got array of dtype int64"),
    ("mse", "bool", np.ones((BATCH, N_OUT), bool), TypeError,
     r"mse targets must be floating-point, got array of dtype bool"),
    ("mse", "int_labels", Y_GOOD["softmax"], TypeError,
     r"mse targets must be floating-point, got array of dtype int64"),
    ("mse", "inf", _MSE_INF, ValueError, r"y contains NaN or inf"),
    ("mse", "nan", np.full((BATCH, N_OUT), np.nan), ValueError, r"y contains NaN or inf"),
    ("mse", "wrong_outputs", Y_GOOD["mse"][:, :2], ValueError,
     r"shape \(6, 3\) to match the output, got .*shape \(6, 2\)"),
    ("mse", "wrong_batch", np.ones((BATCH + 1, N_OUT), np.float32), ValueError,
     r"shape \(6, 3\) to match the output, got .*shape \(7, 3\)"),
    ("mse", "transposed", Y_GOOD["mse"].T.copy(), ValueError,
     r"shape \(6, 3\) to match the output, got .*shape \(3, 6\)"),
    ("mse", "overflows_float32", Y_GOOD["mse"].astype(np.float64) * 1e300, ValueError,
     r"y has values beyond the range of float32.*cast from float64"),
]


@pytest.mark.parametrize("method", list(XY_METHODS))
@pytest.mark.parametrize(("loss_kind", "y", "exc", "match"), [c[:1] + c[2:] for c in Y_CASES],
                         ids=[f"{c[0]}-{c[1]}" for c in Y_CASES])
def test_bad_targets_refused(opt_kind, method, loss_kind, y, exc, match):
    net = make_trained(opt_kind, loss_kind)
    assert_refused(net, lambda: XY_METHODS[method](net, X_GOOD, y), exc, match)


def test_validation_data_errors_say_so(trained_net):
    before = snapshot(trained_net)
    with pytest.raises(ValueError, match=r"^validation_data: X has 5 features per row, expected 4"):
        trained_net.fit(X_GOOD, Y_GOOD["softmax"], validation_data=(np.ones((3, 5), np.float32), [0, 1, 2]),
                        progress=False)
    with pytest.raises(ValueError, match=r"^validation_data: class labels must be in \[0, 3\), got .* to 7"):
        trained_net.fit(X_GOOD, Y_GOOD["softmax"], validation_data=(X_GOOD[:2], [0, 7]), progress=False)
    assert_unchanged(trained_net, before)


# -- fit's own arguments -----------------------------------------------------------------------

FIT_ARG_CASES = [
    ("epochs_0", {"epochs": 0}, ValueError, r"epochs must be a positive integer, got 0"),
    ("epochs_negative", {"epochs": -2}, ValueError, r"epochs must be a positive integer, got -2"),
    ("epochs_float", {"epochs": 1.5}, TypeError, r"epochs must be a positive integer, got 1\.5"),
    ("epochs_bool", {"epochs": True}, TypeError, r"epochs must be a positive integer, got True"),
    ("epochs_str", {"epochs": "3"}, TypeError, r"epochs must be a positive integer, got '3'"),
    ("batch_size_0", {"batch_size": 0}, ValueError, r"batch_size must be a positive integer, got 0"),
    ("batch_size_float", {"batch_size": 2.0}, TypeError, r"batch_size must be a positive integer, got 2\.0"),
    ("batch_size_none", {"batch_size": None}, TypeError, r"batch_size must be a positive integer, got None"),
    ("mode_unknown", {"mode": "adam"}, ValueError, r"mode must be one of \('sgd', 'gd'\), got 'adam'"),
    ("mode_upper", {"mode": "SGD"}, ValueError, r"mode must be one of \('sgd', 'gd'\), got 'SGD'"),
    ("mode_none", {"mode": None}, ValueError, r"mode must be one of \('sgd', 'gd'\), got None"),
    ("validation_single", {"validation_data": (X_GOOD,)}, TypeError,
     r"validation_data must be a pair \(X_val, y_val\), got a tuple of length 1"),
    ("validation_triple", {"validation_data": [X_GOOD, [0] * BATCH, None]}, TypeError,
     r"must be a pair \(X_val, y_val\), got a list of length 3"),
    ("validation_array", {"validation_data": X_GOOD}, TypeError,
     r"must be a pair \(X_val, y_val\), got a ndarray"),
]


@pytest.mark.parametrize("mode", ["sgd", "gd"])
@pytest.mark.parametrize(("kwargs", "exc", "match"), [c[1:] for c in FIT_ARG_CASES],
                         ids=[c[0] for c in FIT_ARG_CASES])
def test_bad_fit_arguments_refused(trained_net, mode, kwargs, exc, match):
    kwargs = {"mode": mode, "progress": False, **kwargs}
    assert_refused(trained_net, lambda: trained_net.fit(X_GOOD, Y_GOOD["softmax"], **kwargs), exc, match)


def test_predict_proba_needs_a_classifier(opt_kind):
    net = make_trained(opt_kind, "mse")
    assert_refused(net, lambda: net.predict_proba(X_GOOD), TypeError,
                   r"predict_proba needs a classification loss, not MeanSquaredError\(\)")


# -- what is allowed: labels, and float inputs of the other precision --------------------------

def _trained_copy_results(loss_kind, y_a, y_b, opt_kind="sgd_momentum"):
    """Train two identical networks, one on y_a and one on y_b; return both parameter lists."""
    out = []
    for y in (y_a, y_b):
        net = make_net(opt_kind, loss_kind)
        losses = [net.train_step(X_GOOD, y) for _ in range(2)]
        losses.append(net.fit(X_GOOD, y, epochs=2, batch_size=4, progress=False, rng=0)["loss"])
        out.append((losses, [p.copy() for p in net.parameters()]))
    return out


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64])
def test_softmax_integer_labels_equal_onehot(dtype):
    labels = Y_GOOD["softmax"].astype(dtype)
    (loss_a, params_a), (loss_b, params_b) = _trained_copy_results("softmax", labels, _ONEHOT)
    assert loss_a == loss_b
    for a, b in zip(params_a, params_b, strict=True):
        assert _same_bits(a, b)
    net = make_trained("adam", "softmax")
    scores = net.evaluate(X_GOOD, labels)
    assert scores == net.evaluate(X_GOOD, _ONEHOT)
    assert set(scores) == {"loss", "accuracy"}


def test_softmax_labels_as_python_list():
    net = make_net()
    assert np.isfinite(net.train_step(X_GOOD, [0, 1, 2, 0, 1, 2]))


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, bool])
def test_bce_integer_and_bool_labels_equal_float(dtype):
    labels = Y_GOOD["bce"].astype(dtype)
    (loss_a, params_a), (loss_b, params_b) = _trained_copy_results("bce", labels, Y_GOOD["bce"])
    assert loss_a == loss_b
    for a, b in zip(params_a, params_b, strict=True):
        assert _same_bits(a, b)


def test_bce_single_output_takes_1d_labels():
    def net1():
        layers = [fn.DenseLayer("relu", N_IN, neurons_num=N_HIDDEN, rng=0, backend="numpy"),
                  fn.DenseLayer("identity", neurons_num=1, rng=1, backend="numpy")]
        return fn.NeuralNetwork(layers, "bce", fn.SGD(0.1), backend="numpy")

    a, b = net1(), net1()
    labels = np.array([0, 1, 1, 0, 1, 0])
    assert a.train_step(X_GOOD, labels) == b.train_step(X_GOOD, labels.reshape(-1, 1).astype(np.float32))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert _same_bits(p, q)
    assert a.predict(X_GOOD).shape == (BATCH,)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got values from 0\.0 to 3\.0"):
        a.train_step(X_GOOD, labels * 3)


def test_bce_probabilities_allowed():
    net = make_net("adam", "bce")
    probs = np.full((BATCH, N_OUT), 0.25, np.float32)
    assert np.isfinite(net.train_step(X_GOOD, probs))


@pytest.mark.parametrize(("net_dtype", "x_dtype"),
                         [(np.float32, np.float64), (np.float64, np.float32), (np.float32, np.float16)])
def test_network_casts_other_float_inputs_like_astype(net_dtype, x_dtype):
    X = np.random.default_rng(5).normal(size=(BATCH, N_IN)).astype(x_dtype)
    y_float = Y_GOOD["mse"].astype(x_dtype)
    nets = {}
    for how in ("implicit", "explicit"):
        net = make_net("adam", "mse", dtype=net_dtype)
        xin = X if how == "implicit" else X.astype(net_dtype)
        yin = y_float if how == "implicit" else y_float.astype(net_dtype)
        result = {
            "train_step": net.train_step(xin, yin),
            "fit": net.fit(xin, yin, epochs=2, batch_size=4, progress=False, rng=0,
                           validation_data=(xin, yin)),
            "evaluate": net.evaluate(xin, yin),
            "predict": net.predict(xin).copy(),
            "forward": net.forward(xin).copy(),
        }
        net.backward(np.ones((BATCH, N_OUT), x_dtype) if how == "implicit"
                     else np.ones((BATCH, N_OUT), net_dtype))
        result["grads"] = [g.copy() for g in net.gradients()]
        result["params"] = [p.copy() for p in net.parameters()]
        nets[how] = result
    a, b = nets["implicit"], nets["explicit"]
    assert a["predict"].dtype == np.dtype(net_dtype)
    assert a["train_step"] == b["train_step"]
    assert a["fit"] == b["fit"]
    assert a["evaluate"] == b["evaluate"]
    for key in ("predict", "forward"):
        assert _same_bits(a[key], b[key])
    for key in ("grads", "params"):
        for p, q in zip(a[key], b[key], strict=True):
            assert _same_bits(p, q)


# -- the layer API refuses another float dtype rather than cast --------------------------------

@pytest.mark.parametrize(("layer_dtype", "other"), [(np.float32, np.float64), (np.float64, np.float32)])
def test_dense_layer_refuses_other_float_dtype(layer_dtype, other):
    layer = fn.DenseLayer("tanh", N_IN, neurons_num=N_OUT, dtype=layer_dtype, rng=0, backend="numpy")
    x = X_GOOD.astype(layer_dtype)
    name, want = np.dtype(other).name, np.dtype(layer_dtype).name
    with pytest.raises(TypeError, match=rf"x has dtype {name} but the layer computes in {want}"):
        layer.forward_pass(x.astype(other))
    assert layer.x is None  # nothing was cached by the refused pass
    y = layer.forward_pass(x).copy()
    layer.backward_pass(np.ones((BATCH, N_OUT), layer_dtype))
    grads = [g.copy() for g in layer.gradients()]
    params = [p.copy() for p in layer.parameters()]
    with pytest.raises(TypeError, match=rf"dy has dtype {name} but the layer computes in {want}"):
        layer.backward_pass(np.full((BATCH, N_OUT), 2, other))
    with pytest.raises(TypeError, match=rf"x has dtype {name} but the layer computes in {want}"):
        layer.forward_pass(np.zeros((BATCH, N_IN), other))
    kept = grads + params + [y]
    for now, before in zip(layer.gradients() + layer.parameters() + [layer.y], kept, strict=True):
        assert _same_bits(now, before)


def test_dense_layer_backward_before_forward():
    layer = fn.DenseLayer("relu", N_IN, neurons_num=N_OUT, rng=0, backend="numpy")
    w = layer.w.copy()
    with pytest.raises(ValueError, match=r"backward_pass called before forward_pass"):
        layer.backward_pass(np.ones((BATCH, N_OUT), np.float32))
    assert _same_bits(layer.w, w)
    assert layer.dw is None


def test_dense_layer_backward_batch_mismatch():
    layer = fn.DenseLayer("relu", N_IN, neurons_num=N_OUT, rng=0, backend="numpy")
    layer.forward_pass(X_GOOD)
    with pytest.raises(ValueError, match=r"dy has 5 rows but the last forward pass had 6"):
        layer.backward_pass(np.ones((BATCH - 1, N_OUT), np.float32))
    with pytest.raises(ValueError, match=r"dy has 4 features per row, expected 3"):
        layer.backward_pass(np.ones((BATCH, N_OUT + 1), np.float32))


def test_unbuilt_layer_forward_refused():
    layer = fn.DenseLayer("relu", neurons_num=3, backend="numpy")
    with pytest.raises(ValueError, match=r"no input size yet: pass input_size_info"):
        layer.forward_pass(X_GOOD)


def test_network_backward_before_forward():
    net = make_net()
    before = [p.copy() for p in net.parameters()]
    with pytest.raises(ValueError, match=r"backward called before forward"):
        net.backward(np.ones((BATCH, N_OUT), np.float32))
    for p, q in zip(net.parameters(), before, strict=True):
        assert _same_bits(p, q)


def test_network_backward_bad_dout(trained_net):
    trained_net.forward(X_GOOD)
    with pytest.raises(ValueError, match=r"dout has 2 rows but the last forward had 6"):
        trained_net.backward(np.ones((2, N_OUT), np.float32))
    with pytest.raises(TypeError, match=r"dout must be a floating-point array, got array of dtype int64"):
        trained_net.backward(np.ones((BATCH, N_OUT), np.int64))


# -- construction ----------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"neurons_num": 0}, ValueError, r"neurons_num must be a positive integer, got 0"),
    ({"neurons_num": -3}, ValueError, r"neurons_num must be a positive integer, got -3"),
    ({"neurons_num": 2.5}, TypeError, r"neurons_num must be a positive integer, got 2\.5"),
    ({"neurons_num": True}, TypeError, r"neurons_num must be a positive integer, got True"),
    ({"neurons_num": "4"}, TypeError, r"neurons_num must be a positive integer, got '4'"),
    ({"activation": "relux"}, ValueError, r"unknown activation 'relux'; expected one of \[.*'relu'"),
    ({"activation": 3}, TypeError, r"activation must be a name such as 'relu' .*got 3"),
    ({"init_func": "glorot"}, ValueError,
     r"unknown init function 'glorot'; expected one of \[.*'he_init_gauss'"),
    ({"init_func": 3}, TypeError, r"init_func must be a WeightInit function.*got 3"),
    ({"dtype": np.float16}, ValueError, r"dtype must be float32 or float64, got .*float16"),
    ({"dtype": np.int32}, ValueError, r"dtype must be float32 or float64, got .*int32"),
    ({"dtype": "complex128"}, ValueError, r"dtype must be float32 or float64, got 'complex128'"),
    ({"dtype": "not a dtype"}, ValueError, r"dtype must be float32 or float64, got 'not a dtype'"),
    ({"dtype": None}, ValueError, r"dtype must be float32 or float64, got None"),
    ({"dtype": np.dtype(">f8")}, ValueError, r"dtype must be float32 or float64, got dtype\('>f8'\)"),
    ({"input_size_info": "4"}, TypeError, r"input_size_info must be a positive int or a layer.*got '4'"),
    ({"input_size_info": 4.0}, TypeError, r"input_size_info must be a positive int or a layer.*got 4\.0"),
    ({"input_size_info": True}, TypeError, r"input_size_info must be a positive int or a layer.*got True"),
    ({"input_size_info": 0}, ValueError, r"input_size_info must be a positive integer, got 0"),
    ({"input_size_info": -2}, ValueError, r"input_size_info must be a positive integer, got -2"),
    ({"backend": "cuda"}, ValueError, r"backend must be one of \('auto', 'numpy', 'numba'\).*got 'cuda'"),
])
def test_bad_layer_arguments(kwargs, exc, match):
    args = {"activation": "relu", "input_size_info": N_IN, "neurons_num": 3, "backend": "numpy", **kwargs}
    with pytest.raises(exc, match=match):
        fn.DenseLayer(args.pop("activation"), args.pop("input_size_info"), **args)


@pytest.mark.parametrize(("cls", "alpha", "exc", "match"), [
    (fn.LeakyReLU, -0.1, ValueError, r"LeakyReLU alpha must be finite and >= 0, got -0\.1"),
    (fn.ELU, np.nan, ValueError, r"ELU alpha must be finite and >= 0, got nan"),
    (fn.ELU, True, TypeError, r"ELU alpha must be a real number, got True"),
])
def test_bad_activation_alpha(cls, alpha, exc, match):
    with pytest.raises(exc, match=match):
        cls(alpha)


@pytest.mark.parametrize("cls", [fn.LeakyReLU, fn.ELU])
def test_activation_alpha_is_fixed(cls):
    """alpha is part of the hash and of the fused step's cached arguments, so it
    cannot change under them: assigning it raises and says what to do instead."""
    act = cls(0.3)
    with pytest.raises(AttributeError, match=rf"{cls.__name__}\.alpha is fixed .* = {cls.__name__}\(0\.5\)"):
        act.alpha = 0.5
    assert act.alpha == 0.3 and act == cls(0.3) and hash(act) == hash(cls(0.3))


def _layers(*specs, dtypes=None):
    """DenseLayers from (activation, n_in or None, neurons) triples."""
    dtypes = dtypes or [np.float32] * len(specs)
    return [fn.DenseLayer(act, n_in, neurons_num=n, dtype=dt, rng=i, backend="numpy")
            for i, ((act, n_in, n), dt) in enumerate(zip(specs, dtypes, strict=True))]


@pytest.mark.parametrize(("layers", "loss", "exc", "match"), [
    ([], "mse", ValueError, r"needs at least one layer"),
    (["not a layer"], "mse", TypeError, r"layers\[0\] must be a DenseLayer, got 'not a layer'"),
    (_layers(("relu", None, 4), ("identity", None, 3)), "mse", ValueError,
     r"first layer needs its input size"),
    (_layers(("relu", 4, 4), ("identity", 5, 3)), "mse", ValueError,
     r"layers\[1\] takes 5 inputs but layers\[0\] has 4 neurons"),
    (_layers(("relu", 4, 4), ("identity", 4, 3), dtypes=[np.float32, np.float64]), "mse", ValueError,
     r"all layers must share one dtype, got \['float32', 'float64'\]"),
    (_layers(("relu", 4, 4), ("sigmoid", None, 3)), fn.SoftmaxCrossEntropy(), ValueError,
     r"SoftmaxCrossEntropy takes logits: the last layer's activation must be 'identity', got Sigmoid\(\)"),
    (_layers(("relu", 4, 4), ("relu", None, 3)), "softmax_xent", ValueError,
     r"SoftmaxCrossEntropy takes logits: .* must be 'identity', got ReLU\(\)"),
    (_layers(("relu", 4, 4), ("sigmoid", None, 1)), fn.BinaryCrossEntropy(), ValueError,
     r"BinaryCrossEntropy takes logits: .* must be 'identity', got Sigmoid\(\)"),
    (_layers(("identity", 4, 3)), "hinge", ValueError,
     r"unknown loss 'hinge'; expected a Loss object or one of"),
])
def test_bad_network_construction(layers, loss, exc, match):
    with pytest.raises(exc, match=match):
        fn.NeuralNetwork(layers, loss, backend="numpy")


def test_network_needs_an_optimizer_object():
    with pytest.raises(TypeError, match=r"optimizer must be an Optimizer such as SGD\(0\.01\), got 'sgd'"):
        fn.NeuralNetwork(_layers(("identity", 4, 3)), "mse", optimizer="sgd", backend="numpy")


def test_mse_with_any_output_activation_is_allowed():
    net = fn.NeuralNetwork(_layers(("relu", 4, 4), ("sigmoid", None, 3)), "mse", backend="numpy")
    assert isinstance(net.layers[-1].activation, fn.Sigmoid)


# -- optimizers ------------------------------------------------------------------------------------

BAD_LR = [
    (-1, ValueError, r"learning rate \(lr\) must be finite and in \[0\.0, inf\], got -1\.0"),
    (-1e-12, ValueError, r"learning rate \(lr\) must be finite and in \[0\.0, inf\], got -1e-12"),
    (float("nan"), ValueError, r"learning rate \(lr\) must be finite .*got nan"),
    (float("inf"), ValueError, r"learning rate \(lr\) must be finite .*got inf"),
    (np.float32(-0.5), ValueError, r"learning rate \(lr\) must be finite .*got -0\.5"),
    (True, TypeError, r"learning rate \(lr\) must be a real number, got True"),
    ("0.1", TypeError, r"learning rate \(lr\) must be a real number, got '0\.1'"),
    (None, TypeError, r"learning rate \(lr\) must be a real number, got None"),
    (1j, TypeError, r"learning rate \(lr\) must be a real number, got 1j"),
]


@pytest.mark.parametrize("cls", [fn.SGD, fn.Adam])
@pytest.mark.parametrize(("lr", "exc", "match"), BAD_LR)
def test_bad_learning_rate_in_constructor(cls, lr, exc, match):
    with pytest.raises(exc, match=match):
        cls(lr)


@pytest.mark.parametrize(("lr", "exc", "match"), BAD_LR)
def test_setting_bad_learning_rate_keeps_the_old_one(trained_net, lr, exc, match):
    opt = trained_net.optimizer
    old = opt.lr
    assert_refused(trained_net, lambda: setattr(opt, "lr", lr), exc, match)
    assert opt.lr == old
    assert isinstance(opt.lr, float)


def test_zero_learning_rate_is_allowed(trained_net):
    trained_net.optimizer.lr = 0
    assert trained_net.optimizer.lr == 0.0


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"momentum": -0.1}, ValueError, r"momentum must be finite and in \[0\.0, 1\.0\), got -0\.1"),
    ({"momentum": 1.0}, ValueError, r"momentum must be finite and in \[0\.0, 1\.0\), got 1\.0"),
    ({"momentum": 1.5}, ValueError, r"momentum must be finite and in \[0\.0, 1\.0\), got 1\.5"),
    ({"momentum": float("nan")}, ValueError, r"momentum must be finite and in \[0\.0, 1\.0\), got nan"),
    ({"momentum": "0.9"}, TypeError, r"momentum must be a real number, got '0\.9'"),
    ({"nesterov": True}, ValueError, r"nesterov=True needs a momentum > 0"),
    ({"nesterov": True, "momentum": 0.0}, ValueError, r"nesterov=True needs a momentum > 0"),
    ({"nesterov": "yes", "momentum": 0.9}, TypeError, r"nesterov must be True or False, got 'yes'"),
    ({"weight_decay": -1e-4}, ValueError, r"weight_decay must be finite and in \[0\.0, inf\], got -0\.0001"),
])
def test_bad_sgd_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn.SGD(0.1, **kwargs)


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"beta1": 1.0}, ValueError, r"beta1 must be finite and in \[0\.0, 1\.0\), got 1\.0"),
    ({"beta2": -0.1}, ValueError, r"beta2 must be finite and in \[0\.0, 1\.0\), got -0\.1"),
    ({"eps": 0.0}, ValueError, r"eps must be finite and in \(0\.0, inf\], got 0\.0"),
    ({"eps": float("inf")}, ValueError, r"eps must be finite and in \(0\.0, inf\], got inf"),
    ({"weight_decay": float("nan")}, ValueError, r"weight_decay must be finite .*got nan"),
])
def test_bad_adam_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn.Adam(0.01, **kwargs)


# -- backends -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cuda", "NumPy", "", 3, True])
def test_unknown_backend_name(name):
    default = fn.get_default_backend()
    with pytest.raises(ValueError, match=rf"backend must be one of \('auto', 'numpy', 'numba'\) or None, "
                                         rf"got {re.escape(repr(name))}"):
        fn.resolve_backend(name)
    with pytest.raises(ValueError, match=r"backend must be one of"):
        fn.set_default_backend(name)
    assert fn.get_default_backend() == default


def test_numba_backend_works_or_says_it_is_unavailable():
    if "numba" in fn.available_backends():
        assert fn.resolve_backend("numba") == "numba"
    else:
        # An ImportError that says how to install numba (or, in the first version, a
        # ValueError that lists the backends available).
        with pytest.raises((ImportError, ValueError),
                           match=r"'numba' (backend needs numba.*install|is not available.*available: )"):
            fn.resolve_backend("numba")


def test_setting_an_unknown_backend_on_a_network_keeps_the_old_one(trained_net):
    old = trained_net.backend
    with pytest.raises(ValueError, match=r"got 'cuda'"):
        trained_net.backend = "cuda"
    assert trained_net.backend == old
    assert all(layer.backend == old for layer in trained_net.layers)


# -- divergence --------------------------------------------------------------------------------------

def _huge_input_net(opt_kind):
    """A float64 linear MSE network whose loss overflows to inf at once on huge (finite) inputs."""
    layers = _layers(("identity", N_IN, N_HIDDEN), ("identity", None, N_OUT), dtypes=[np.float64] * 2)
    net = fn.NeuralNetwork(layers, "mse", make_optimizer(opt_kind), backend="numpy")
    for _ in range(2):
        net.train_step(X_GOOD, Y_GOOD["mse"])
    return net, np.full((BATCH, N_IN), 1e200)


def test_train_step_divergence_applies_no_update(opt_kind):
    net, X = _huge_input_net(opt_kind)
    before = snapshot(net)
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(FloatingPointError,
                           match=r"the loss is (inf|nan) in train_step; that step's update was not applied"):
            net.train_step(X, Y_GOOD["mse"])
    assert_unchanged(net, before)
    assert all(np.isfinite(p).all() for p in net.parameters())


@pytest.mark.parametrize("mode", ["sgd", "gd"])
def test_fit_divergence_on_first_step_applies_no_update(opt_kind, mode):
    net, X = _huge_input_net(opt_kind)
    before = snapshot(net)
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(FloatingPointError, match=r"loss is (inf|nan) at epoch 1, step 1;"):
            net.fit(X, Y_GOOD["mse"], epochs=3, batch_size=2, mode=mode, progress=False)
    assert_unchanged(net, before)


class RecordingSGD(fn.SGD):
    """SGD that keeps a copy of the parameters and velocities after every update."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.after_step = []

    def step(self, kernels, params, grads):
        super().step(kernels, params, grads)
        self.after_step.append(([p.copy() for p in params], [v.copy() for v in self.state]))


@pytest.mark.parametrize("mode", ["sgd", "gd"])
def test_fit_divergence_keeps_the_last_good_update(mode):
    """A huge learning rate: the loss grows each step until it overflows.  fit raises
    FloatingPointError naming the epoch and step whose loss was not finite, and the
    parameters and velocities are exactly those after the last update applied."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, N_IN)).astype(np.float32)
    y = rng.normal(size=(40, N_OUT)).astype(np.float32)
    layers = _layers(("identity", N_IN, N_HIDDEN), ("identity", None, N_OUT))
    opt = RecordingSGD(5.0, momentum=0.5)
    net = fn.NeuralNetwork(layers, "mse", opt, backend="numpy")
    initial = [p.copy() for p in net.parameters()]
    batch_size, steps_per_epoch = 8, 5
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(FloatingPointError) as info:
            net.fit(X, y, epochs=500, batch_size=batch_size, mode=mode, shuffle=False, progress=False)
    found = re.search(r"the loss is (inf|nan) at epoch (\d+), step (\d+); that step's update was not applied",
                      str(info.value))
    assert found, str(info.value)
    epoch, step = int(found[2]), int(found[3])
    assert 1 <= step <= steps_per_epoch
    n_updates = len(opt.after_step)
    assert n_updates >= 2  # it did train before diverging
    if mode == "sgd":
        assert n_updates == (epoch - 1) * steps_per_epoch + (step - 1)
    else:  # full-batch: one update per completed epoch
        assert n_updates == epoch - 1
    last_params, last_velocity = opt.after_step[-1]
    for p, q in zip(net.parameters(), last_params, strict=True):
        assert _same_bits(p, q)
    for v, w in zip(opt.state, last_velocity, strict=True):
        assert _same_bits(v, w)
    # With these settings the loss overflows (MSE squares the outputs) while every
    # parameter ever written is still finite, so the network is left finite and usable.
    assert all(np.isfinite(p).all() for params, _ in opt.after_step for p in params)
    assert not all(_same_bits(p, q) for p, q in zip(net.parameters(), initial, strict=True))
    # The batch named in the message is the first whose loss, with those parameters, is not finite.
    with np.errstate(over="ignore", invalid="ignore"):
        batch_losses = [_ref.loss_value(net.loss.code, net.forward(X[s:s + batch_size]), y[s:s + batch_size])
                        for s in range(0, len(X), batch_size)]
    if mode == "sgd":
        assert not np.isfinite(batch_losses[step - 1])
    else:
        assert np.isfinite(batch_losses[:step - 1]).all()
        assert not np.isfinite(batch_losses[step - 1])


def _trained_5_4_3(backend, batch, momentum):
    """A 5-4-3 softmax network after one train_step on (x, y) of this batch size."""
    if backend == "numba":
        pytest.importorskip("numba")
    net = fn.NeuralNetwork([fn.DenseLayer("relu", 5, neurons_num=4, rng=0),
                            fn.DenseLayer("identity", neurons_num=3, rng=1)],
                           "softmax_xent", fn.SGD(0.1, momentum=momentum), backend=backend)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(batch, 5)).astype(np.float32), rng.integers(0, 3, batch)
    net.train_step(x, y)
    return net, x, y


def _assert_unchanged(net, params, state):
    for p, q in zip(net.parameters(), params, strict=True):
        np.testing.assert_array_equal(p, q)
    for s, t in zip(net.optimizer.state, state, strict=True):
        np.testing.assert_array_equal(s, t)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize(("batch", "momentum", "keep_grads"),
                         [(3, 0.0, False), (32, 0.0, False), (32, 0.9, False), (3, 0.0, True)])
@pytest.mark.parametrize(("name", "shape", "dtype"), [
    ("b", (1, 5), np.float32), ("b", (1, 1), np.float32), ("b", (4,), np.float32),
    ("w", (4, 4), np.float32), ("b", (1, 4), np.float64)])
def test_replaced_weights_of_another_shape_or_dtype_are_refused(backend, batch, momentum, keep_grads,
                                                                 name, shape, dtype):
    """The kernels index w and b unchecked, so every path (fused, by tiles or BLAS,
    layered, predict) refuses parameters assigned by hand that do not fit the
    layer, before touching parameters or state."""
    net, x, y = _trained_5_4_3(backend, batch, momentum)
    setattr(net.layers[0], name, np.ones(shape, dtype))
    before = [p.copy() for p in net.parameters()]
    state = [s.copy() for s in net.optimizer.state]
    expected = (5, 4) if name == "w" else (1, 4)
    message = (rf"(layers\[0\]\.|the layer's ){name} must be a float32 array "
               rf"of shape \({expected[0]}, {expected[1]}\)")
    with pytest.raises(ValueError, match=message):
        net.train_step(x, y, keep_grads=keep_grads)
    with pytest.raises(ValueError, match=message):
        net.predict(x)
    with pytest.raises(ValueError, match=message):
        net.fit(x, y, epochs=1, batch_size=batch, progress=False)
    _assert_unchanged(net, before, state)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("batch", [3, 32])
def test_weights_replaced_between_forward_and_backward_are_refused(backend, batch):
    """backward_pass and NeuralNetwork.backward check w again: a bad w reaching
    the compiled dx loops would write past the end of dx."""
    if backend == "numba":
        pytest.importorskip("numba")
    layer = fn.DenseLayer("relu", 5, neurons_num=4, rng=0, backend=backend)
    net = fn.NeuralNetwork([layer], "mse", backend=backend)
    x = np.random.default_rng(0).normal(size=(batch, 5)).astype(np.float32)
    dy = np.ones((batch, 4), np.float32)
    for forward, backward in ((layer.forward_pass, layer.backward_pass), (net.forward, net.backward)):
        forward(x)
        layer.w = np.ones((4000, 4), np.float32)
        message = r"(layers\[0\]\.|the layer's )w must be a float32 array of shape \(5, 4\)"
        with pytest.raises(ValueError, match=message):
            backward(dy)
        layer.w = np.ones((5, 4), np.float32)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize(("batch", "momentum", "keep_grads"),
                         [(3, 0.0, False), (32, 0.0, False), (32, 0.9, False), (3, 0.0, True)])
@pytest.mark.parametrize("layout", ["fortran", "read-only"])
def test_replaced_weights_must_be_c_contiguous_and_writeable(backend, batch, momentum, keep_grads, layout):
    """Every training path (fused, by tiles or BLAS, layered) refuses weights the
    kernels cannot update in place, before touching parameters or state."""
    net, x, y = _trained_5_4_3(backend, batch, momentum)
    w = np.asfortranarray(net.layers[1].w)
    if layout == "read-only":
        w = np.array(w, order="C")
        w.flags.writeable = False
    net.layers[1].w = w
    before = [p.copy() for p in net.parameters()]
    state = [s.copy() for s in net.optimizer.state]
    with pytest.raises(ValueError, match="parameter 2 must be a writeable C-contiguous ndarray"):
        net.train_step(x, y, keep_grads=keep_grads)
    _assert_unchanged(net, before, state)

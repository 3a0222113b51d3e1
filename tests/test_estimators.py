"""fastnet.MLPClassifier / MLPRegressor: scikit-learn's own estimator checks,
the hyperparameter mapping against scikit-learn's MLPs from the same weights,
and the estimators inside scikit-learn's tools."""

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn import neural_network as sk
from sklearn.base import clone
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastnet as fn


# scikit-learn's checks fit with the defaults (max_iter=200) on small random data sets,
# where neither its own MLPs nor these converge: ConvergenceWarning is expected there.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([fn.MLPClassifier(), fn.MLPRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_import_fastnet_does_not_import_sklearn():
    code = "import sys, fastnet; assert 'sklearn' not in sys.modules; fastnet.MLPClassifier; " \
           "assert 'sklearn' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the mapping onto fastnet's optimizers, against scikit-learn from the same weights --------
def _data(kind, n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    if kind == "multiclass":
        y = rng.integers(0, 3, n)
    elif kind == "binary":
        y = rng.integers(0, 2, n)
    elif kind == "multilabel":
        y = rng.integers(0, 2, (n, 3))
    else:  # regression with 3 outputs (so that scikit-learn's gradient is 3/2 of fastnet's)
        y = X[:, :2] @ np.array([[1.0, -0.5, 0.2], [0.3, 2.0, -1.0]]) + 0.1 * rng.normal(size=(n, 3))
    return X, y


def _from_sklearn_weights(kind, epochs, **params):
    """scikit-learn's MLP and fastnet's estimator, float64, trained for
    ``epochs`` from scikit-learn's initial weights, each by a fresh optimizer
    (a warm-start fit, where both make a new optimizer)."""
    X, y = _data(kind)
    cls = (sk.MLPRegressor, fn.MLPRegressor) if kind == "regression" else (sk.MLPClassifier, fn.MLPClassifier)
    common = dict(hidden_layer_sizes=(7,), activation="tanh", max_iter=1, shuffle=False, random_state=0,
                  tol=0.0, n_iter_no_change=1000, **params)
    ref = cls[0](**common)
    ours = cls[1](dtype="float64", backend="numpy", **common)
    with pytest.warns(ConvergenceWarning):
        ref.fit(X, y)
    with pytest.warns(ConvergenceWarning):
        ours.fit(X, y)
    for mine, theirs in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_, strict=True):
        mine[...] = theirs  # coefs_ and intercepts_ are views of the network's arrays
    ref.set_params(warm_start=True, max_iter=epochs)
    ours.set_params(warm_start=True, max_iter=epochs)
    with pytest.warns(ConvergenceWarning):
        ref.fit(X, y)
    with pytest.warns(ConvergenceWarning):
        ours.fit(X, y)
    return ref, ours


# float64 on both sides, 3 epochs of a 5-7-k network: the same updates in another
# summation order differ by a few ulps per operation, ~1e-14 relative after 3 epochs
TIGHT = dict(rtol=1e-9, atol=1e-12)
KINDS = ["multiclass", "binary", "multilabel", "regression"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_updates_equal_sklearns(kind, nesterov):
    ref, ours = _from_sklearn_weights(kind, 3, solver="sgd", learning_rate_init=0.05, momentum=0.9,
                                      nesterovs_momentum=nesterov, alpha=0.0, batch_size=16)
    for mine, theirs in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_, strict=True):
        np.testing.assert_allclose(mine, theirs, **TIGHT)
    # scikit-learn's loss curve (its loss scale, not fastnet's), both from the same weights
    np.testing.assert_allclose(ours.loss_curve_[-3:], ref.loss_curve_[-3:], **TIGHT)


@pytest.mark.parametrize("kind", KINDS)
def test_adam_updates_equal_sklearns(kind):
    # scikit-learn's Adam adds epsilon outside the bias correction (Kingma's form with
    # epsilon / sqrt(1 - beta_2^t)), fastnet's inside; a tiny epsilon makes the two the
    # same update to ~1e-10 relative where |g| ~ 1e-3
    ref, ours = _from_sklearn_weights(kind, 3, solver="adam", learning_rate_init=0.01, alpha=0.0,
                                      batch_size=16, epsilon=1e-16)
    for mine, theirs in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("kind", KINDS)
def test_adam_epsilon_maps_onto_fastnets_gradient_scale(kind):
    # with beta_2 = 0 both bias corrections of v are 1, so the two forms are the same
    # update and an epsilon as large as the gradients (1e-2) must map exactly (epsilon / c)
    ref, ours = _from_sklearn_weights(kind, 3, solver="adam", learning_rate_init=0.01, alpha=0.0,
                                      batch_size=16, beta_2=0.0, epsilon=1e-2)
    for mine, theirs in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_, strict=True):
        np.testing.assert_allclose(mine, theirs, **TIGHT)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_alpha_is_sklearns_l2_penalty_on_the_weights(kind, solver):
    # one full-batch step from the same weights: scikit-learn's penalty alpha/B * W is in
    # the weights' update exactly; fastnet's weight_decay also decays the biases (documented)
    # (epsilon as in the Adam test above; alpha large enough to flip the sign of some
    # gradients, since Adam's first step is lr * sign(g) whatever the scale of g)
    ref, ours = _from_sklearn_weights(kind, 1, solver=solver, learning_rate_init=0.05, momentum=0.0,
                                      alpha=50.0, batch_size=60, epsilon=1e-16)
    before = _from_sklearn_weights(kind, 1, solver=solver, learning_rate_init=0.05, momentum=0.0,
                                   alpha=0.0, batch_size=60, epsilon=1e-16)[0]
    for mine, theirs, unpenalised in zip(ours.coefs_, ref.coefs_, before.coefs_, strict=True):
        np.testing.assert_allclose(mine, theirs, **TIGHT)
        assert np.abs(theirs - unpenalised).max() > 1e-4  # the penalty changed the step


def test_lbfgs_and_bad_hyperparameters_are_refused_in_fit():
    X, y = _data("binary")
    est = fn.MLPClassifier(solver="lbfgs")
    with pytest.raises(ValueError, match="lbfgs"):
        est.fit(X, y)
    assert not hasattr(est, "network_")
    for bad in (dict(hidden_layer_sizes=(0,)), dict(activation="swish"), dict(batch_size=0),
                dict(momentum=1.5), dict(shuffle="no"), dict(dtype="int8"), dict(init="bogus")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            fn.MLPClassifier(**bad).fit(X, y)


# -- labels, methods and attributes -----------------------------------------------------------
def test_string_and_noncontiguous_labels():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    est = fn.MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0, learning_rate_init=0.01)
    est.fit(X, names)
    assert est.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    assert est.score(X, names) > 0.9
    assert set(est.predict(X)) <= set(names)
    odd = np.array([3, 10, 42])[y]
    est2 = clone(est).fit(X, odd)
    assert est2.classes_.tolist() == [3, 10, 42]
    proba = est2.predict_proba(X)
    assert proba.dtype == np.float64 and proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(est2.classes_[proba.argmax(axis=1)], est2.predict(X))
    np.testing.assert_allclose(est2.predict_log_proba(X), np.log(proba))


def test_binary_and_multilabel_outputs():
    X, y = _data("binary", n=200)
    labels = np.array(["no", "yes"])[y]
    est = fn.MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, labels)
    assert est.n_outputs_ == 1 and est.out_activation_ == "logistic"
    proba = est.predict_proba(X)
    np.testing.assert_array_equal(est.classes_[(proba[:, 1] > 0.5).astype(int)], est.predict(X))
    X, Y = _data("multilabel", n=200)
    est = fn.MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, Y)
    assert est.n_outputs_ == 3 and est.predict(X).shape == (200, 3)
    assert set(np.unique(est.predict(X))) <= {0, 1}


def test_attributes_match_sklearns_names():
    X, y = _data("multiclass", n=100)
    ours = fn.MLPClassifier(hidden_layer_sizes=(6, 4), max_iter=3, random_state=0)
    theirs = sk.MLPClassifier(hidden_layer_sizes=(6, 4), max_iter=3, random_state=0)
    with pytest.warns(ConvergenceWarning):
        ours.fit(X, y)
    with pytest.warns(ConvergenceWarning):
        theirs.fit(X, y)
    for name in ("n_layers_", "n_outputs_", "out_activation_", "n_iter_", "t_", "n_features_in_"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert [c.shape for c in ours.coefs_] == [c.shape for c in theirs.coefs_]
    assert [b.shape for b in ours.intercepts_] == [b.shape for b in theirs.intercepts_]
    assert len(ours.loss_curve_) == 3 and ours.loss_ == ours.loss_curve_[-1]
    assert ours.best_loss_ == min(ours.loss_curve_)
    assert ours.validation_scores_ is None
    assert isinstance(ours.network_, fn.NeuralNetwork)


def test_pickle_and_clone_keep_predictions():
    X, y = _data("multiclass", n=100)
    est = fn.MLPClassifier(hidden_layer_sizes=(6,), max_iter=20, random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))
    fresh = clone(est)
    assert not hasattr(fresh, "network_") and fresh.get_params() == est.get_params()


def test_regressor_1d_and_2d_targets():
    X, y = make_regression(n_samples=200, n_features=6, n_targets=1, noise=0.1, random_state=0)
    est = fn.MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, learning_rate_init=0.01, random_state=0)
    est.fit(X, y / y.std())
    assert est.predict(X).shape == (200,) and est.score(X, y / y.std()) > 0.9
    Y = np.column_stack([y, -y]) / y.std()
    est2 = clone(est).fit(X, Y)
    assert est2.predict(X).shape == (200, 2) and est2.score(X, Y) > 0.9


# -- partial_fit, warm start, early stopping ---------------------------------------------------
def test_partial_fit_over_chunks_equals_fit_over_the_same_batches():
    X, y = _data("multiclass", n=96)
    params = dict(hidden_layer_sizes=(8,), solver="sgd", momentum=0.9, batch_size=16, shuffle=False,
                  random_state=3, backend="numpy", dtype="float64", tol=0.0)
    whole = fn.MLPClassifier(max_iter=1, **params)
    with pytest.warns(ConvergenceWarning):
        whole.fit(X, y)
    chunked = fn.MLPClassifier(**params)
    for s in range(0, 96, 16):  # each chunk is one batch, so the steps are the same steps
        chunked.partial_fit(X[s:s + 16], y[s:s + 16], classes=[0, 1, 2])
    # the same arithmetic in the same order: equal to the last bit
    for a, b in zip(whole.coefs_ + whole.intercepts_, chunked.coefs_ + chunked.intercepts_, strict=True):
        np.testing.assert_array_equal(a, b)
    assert chunked.n_iter_ == 1 and chunked.t_ == 96  # as scikit-learn: n_iter_ counts one call


def test_partial_fit_needs_classes_first_and_refuses_new_labels():
    X, y = _data("multiclass", n=30)
    est = fn.MLPClassifier(hidden_layer_sizes=(4,))
    with pytest.raises(ValueError, match="classes"):
        est.partial_fit(X, y)
    est.partial_fit(X, y, classes=[0, 1, 2, 3])
    w = [c.copy() for c in est.coefs_]
    with pytest.raises(ValueError, match="not in classes_"):
        est.partial_fit(X, y + 7)
    for a, b in zip(w, est.coefs_, strict=True):
        np.testing.assert_array_equal(a, b)  # a refused call changed nothing


def test_early_stopping_keeps_the_best_validation_epoch():
    X, y = make_classification(n_samples=600, n_features=20, n_informative=5, random_state=0)
    # tol above two validation samples' share of the accuracy (2/60): small gains are no gains
    params = dict(hidden_layer_sizes=(64,), early_stopping=True, n_iter_no_change=3, random_state=0,
                  backend="numpy", tol=0.04)
    est = fn.MLPClassifier(max_iter=200, **params).fit(X, y)
    scores = est.validation_scores_
    best_before = np.maximum.accumulate(scores)[:-1]
    gains = np.asarray(scores[1:]) - best_before
    assert ((gains > 0) & (gains < est.tol)).any()  # the case the rule is about happens here
    assert est.n_iter_ < 200 and len(scores) == est.n_iter_
    assert est.best_validation_score_ == max(scores) and est.best_loss_ is None
    # scikit-learn's rule replayed: an epoch counts as no improvement when its score is below
    # the best so far + tol; training stops the first time the count exceeds n_iter_no_change
    best, count, stop = -np.inf, 0, None
    for epoch, score in enumerate(scores, start=1):
        count = count + 1 if score < best + est.tol else 0
        best = max(best, score)
        if count > est.n_iter_no_change:
            stop = epoch
            break
    assert stop == est.n_iter_


def test_early_stopping_restores_the_best_epoch():
    X, y = make_classification(n_samples=600, n_features=20, n_informative=5, random_state=0)
    params = dict(hidden_layer_sizes=(64,), early_stopping=True, n_iter_no_change=3, random_state=0,
                  backend="numpy", learning_rate_init=0.003, tol=0.02)
    est = fn.MLPClassifier(max_iter=200, **params).fit(X, y)
    best_epoch = int(np.argmax(est.validation_scores_)) + 1
    assert best_epoch < est.n_iter_  # the last epochs were worse: there is something to restore
    # the parameters kept are the best epoch's: the same fit stopped there by max_iter
    short = fn.MLPClassifier(max_iter=best_epoch, **params)
    with warnings.catch_warnings():  # stopped by max_iter, or by the rule at that same epoch
        warnings.simplefilter("ignore", ConvergenceWarning)
        short.fit(X, y)
    for a, b in zip(est.coefs_ + est.intercepts_, short.coefs_ + short.intercepts_, strict=True):
        np.testing.assert_array_equal(a, b)


def test_adaptive_learning_rate_as_sklearns():
    # tol=10: no epoch improves, so the schedule alone decides when training stops
    X, y = _data("multiclass", n=60)
    params = dict(hidden_layer_sizes=(8,), solver="sgd", learning_rate="adaptive", learning_rate_init=0.01,
                  tol=10.0, n_iter_no_change=2, max_iter=100, random_state=0)
    ours = fn.MLPClassifier(backend="numpy", **params).fit(X, y)
    ref = sk.MLPClassifier(**params).fit(X, y)
    assert ours.n_iter_ == ref.n_iter_
    assert ours.network_.optimizer.lr == pytest.approx(ref._optimizer.learning_rate, rel=1e-12)


def test_invscaling_learning_rate_as_sklearns():
    X, y = _data("multiclass", n=60)
    params = dict(hidden_layer_sizes=(8,), solver="sgd", learning_rate="invscaling", learning_rate_init=0.5,
                  power_t=0.5, max_iter=5, random_state=0)
    ours, ref = fn.MLPClassifier(backend="numpy", **params), sk.MLPClassifier(**params)
    with pytest.warns(ConvergenceWarning):
        ours.fit(X, y)
    with pytest.warns(ConvergenceWarning):
        ref.fit(X, y)
    assert ours.network_.optimizer.lr == pytest.approx(ref._optimizer.learning_rate, rel=1e-12)


# -- inside scikit-learn's tools ----------------------------------------------------------------
def _small_classification():
    return make_classification(n_samples=300, n_features=10, n_informative=5, n_classes=3, random_state=0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_pipeline_and_cross_val_score():
    X, y = _small_classification()
    pipe = make_pipeline(StandardScaler(), fn.MLPClassifier(hidden_layer_sizes=(32,), max_iter=50,
                                                            random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    # three balanced classes: chance is 1/3; scikit-learn's own MLP scores 0.58-0.73 here
    assert scores.shape == (3,) and scores.min() > 0.5


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search(n_jobs):
    X, y = _small_classification()
    grid = GridSearchCV(fn.MLPClassifier(max_iter=30, random_state=0),
                        {"hidden_layer_sizes": [(8,), (32,)], "alpha": [1e-4, 1e-2]}, cv=3, n_jobs=n_jobs)
    grid.fit(X, y)
    assert grid.best_params_["hidden_layer_sizes"] in [(8,), (32,)]
    assert grid.best_estimator_.score(X, y) > 0.6


# -- the estimator's fit is NeuralNetwork.fit ----------------------------------------------------
def test_estimator_fit_equals_core_fit_on_the_same_seed():
    X, y = _data("multiclass", n=90)
    est = fn.MLPClassifier(hidden_layer_sizes=(8, 6), solver="sgd", learning_rate_init=0.05, momentum=0.9,
                           nesterovs_momentum=False, alpha=0.0, batch_size=20, max_iter=4, random_state=7,
                           backend="numpy", tol=0.0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    # the seeding the estimator documents: SeedSequence(random_state).spawn(n_layers + 2);
    # the layers draw from the first children, the shuffling from the last
    seeds = np.random.SeedSequence(7).spawn(3 + 2)

    def glorot(layer):  # scikit-learn's: weights, then biases, from U(-l, l)
        limit = np.sqrt(6.0 / (layer.n_inputs + layer.neurons_num))
        layer.w = layer.rng.uniform(-limit, limit, (layer.n_inputs, layer.neurons_num)).astype(np.float32)
        layer.b = layer.rng.uniform(-limit, limit, (1, layer.neurons_num)).astype(np.float32)

    layers = [fn.DenseLayer("relu" if i < 2 else "identity", 5 if i == 0 else None, glorot, neurons_num=width,
                            rng=np.random.default_rng(seeds[i]))
              for i, width in enumerate((8, 6, 3))]
    net = fn.NeuralNetwork(layers, "softmax_xent", fn.SGD(0.05, momentum=0.9), backend="numpy")
    hist = net.fit(X.astype(np.float32), y, epochs=4, batch_size=20, rng=np.random.default_rng(seeds[-1]),
                   progress=False)
    for la, w, b in zip(net.layers, est.coefs_, est.intercepts_, strict=True):
        np.testing.assert_array_equal(la.w, w)
        np.testing.assert_array_equal(la.b[0], b)
    np.testing.assert_allclose(est.loss_curve_, hist["loss"], rtol=1e-12)  # alpha=0, softmax: same figure


def test_warm_start_refuses_another_architecture():
    X, y = _data("multiclass", n=40)
    est = fn.MLPClassifier(hidden_layer_sizes=(6,), max_iter=2, random_state=0, warm_start=True)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    before = [c.copy() for c in est.coefs_]
    est.set_params(hidden_layer_sizes=(7,))
    with pytest.raises(ValueError, match=r"hidden layers \(6,\).*ask for \(7,\)"):
        est.fit(X, y)
    for a, b in zip(before, est.coefs_, strict=True):
        np.testing.assert_array_equal(a, b)
    est.set_params(hidden_layer_sizes=(6,), activation="tanh")
    with pytest.raises(ValueError, match="tanh"):
        est.fit(X, y)

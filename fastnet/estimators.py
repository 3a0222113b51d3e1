"""scikit-learn estimators on fastnet: :class:`MLPClassifier` and :class:`MLPRegressor`.

They follow scikit-learn's conventions (``BaseEstimator``, hyperparameters
stored unchanged by ``__init__`` and checked in ``fit``, fitted attributes
with a trailing underscore) and take the hyperparameters of
``sklearn.neural_network.MLPClassifier``/``MLPRegressor`` with the same names
and meanings, so that switching is a change of import.  The network they
train is a :class:`fastnet.NeuralNetwork`, ``network_``, trained by its own
``fit`` with the callbacks of :mod:`fastnet.callbacks`.

This module imports scikit-learn (``pip install "fastnet-dense[sklearn]"``);
``import fastnet`` does not, and imports this module only when
``fastnet.MLPClassifier`` or ``fastnet.MLPRegressor`` is first used.

How scikit-learn's hyperparameters map onto fastnet's
--------------------------------------------------------
scikit-learn scales its losses differently from fastnet, and the mapping
makes the updates the same, step for step:

- scikit-learn's gradient is ``c`` times fastnet's, with ``c = 1`` for the
  softmax loss (more than two classes), ``c = k`` for the logistic loss on
  ``k`` outputs (two classes: ``k = 1``; multilabel) and ``c = k / 2`` for
  the squared error on ``k`` outputs (scikit-learn's ``squared_error`` is
  half the mean square, with the gradient of half the sum over the outputs).
- ``solver="sgd"``: ``SGD(lr=learning_rate_init * c, momentum=momentum,
  nesterov=nesterovs_momentum and momentum > 0, weight_decay=alpha / (B * c))``
  with ``B`` the batch size.  scikit-learn adds ``alpha * W / n_batch`` to the
  gradient of the weights; fastnet's ``weight_decay`` is a constant and also
  decays the biases, so the two differ in the short last batch of an epoch
  and on the biases (by ``lr * alpha / B * b`` a step).  Momentum is the same
  update at a constant learning rate; when the rate changes (``invscaling``,
  ``adaptive``) fastnet's velocity (PyTorch's form) is scaled by the new rate
  as a whole, scikit-learn's keeps the old rates in it.
- ``solver="adam"``: ``Adam(lr=learning_rate_init, beta1=beta_1,
  beta2=beta_2, eps=epsilon / c, weight_decay=alpha / (B * c))``: Adam's step
  does not depend on the scale of the gradient, except through ``eps``.
- ``loss_`` and ``loss_curve_`` are scikit-learn's figures: fastnet's mean
  batch loss times ``c`` for the logistic loss (times 1/2 for the squared
  error), plus ``alpha / 2 * sum(W**2) * n_batches / n_samples`` taken with
  the weights at the end of the epoch (scikit-learn takes each batch's).
- ``learning_rate="invscaling"`` sets the rate before epoch ``e`` to
  ``learning_rate_init / ((e - 1) * n_samples + 1) ** power_t`` and
  ``"adaptive"`` divides it by 5 where scikit-learn would stop for lack of
  improvement, as scikit-learn does; both for ``solver="sgd"`` only.
- ``solver="lbfgs"`` is not available (fastnet trains by minibatches); it is
  refused in ``fit``.

What else differs: the initial weights and biases are drawn as scikit-learn
draws them (Glorot uniform) but by fastnet's generators (each layer draws its
weights, then its biases), so they are equal in distribution, not in value; the
arithmetic is float32 unless ``dtype="float64"``; sparse input is refused;
``predict_proba`` and the regressor's ``predict`` are returned in float64,
as scikit-learn's checks expect (computed in the network's dtype).
"""

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, check_random_state, column_or_1d, validate_data

from fastnet._workspace import aligned_copy
from fastnet.activations import _BY_NAME as _ACTIVATIONS
from fastnet.callbacks import Callback
from fastnet.init import INIT_NAMES, get_init
from fastnet.layers import DenseLayer
from fastnet.losses import BinaryCrossEntropy, MeanSquaredError, SoftmaxCrossEntropy
from fastnet.network import NeuralNetwork
from fastnet.optimizers import SGD, Adam

__all__ = ["MLPClassifier", "MLPRegressor"]

#: scikit-learn's activation names that differ from fastnet's
_ALIASES = {"logistic": "sigmoid"}
_OUT_ACTIVATION = {"softmax_xent": "softmax", "bce_logits": "logistic", "mse": "identity"}


class _GlorotUniform:
    """scikit-learn's initialisation: weights and biases from U(-l, l) with
    l = sqrt(factor / (fan_in + fan_out)); factor 2 for the logistic
    activation, else 6.  A class, not a closure, so that layers pickle."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, layer):
        limit = np.sqrt(self.factor / (layer.n_inputs + layer.neurons_num))
        layer.w = layer.rng.uniform(-limit, limit, (layer.n_inputs, layer.neurons_num)).astype(layer.dtype)
        layer.b = layer.rng.uniform(-limit, limit, (1, layer.neurons_num)).astype(layer.dtype)


def _sklearn_scales(loss_name, n_outputs):
    """(c, r): scikit-learn's gradient over fastnet's, and its loss over fastnet's
    (see the module's notes), for ``n_outputs`` outputs."""
    k = float(n_outputs)
    return {"softmax_xent": (1.0, 1.0), "bce_logits": (k, k), "mse": (k / 2.0, 0.5)}[loss_name]


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


class _Convergence(Callback):
    """scikit-learn's stopping rule and learning-rate schedules, run after
    every epoch of ``NeuralNetwork.fit``: the loss curve, the validation
    scores, the count of epochs without improvement by ``tol``, and the stop
    (or, with ``learning_rate="adaptive"``, the rate divided by 5) once that
    count exceeds ``n_iter_no_change``."""

    def __init__(self, est, n_samples, n_batches, validation, incremental):
        self.est, self.n_samples, self.n_batches = est, n_samples, n_batches
        self.validation, self.incremental = validation, incremental

    def on_epoch_end(self, epoch, logs):
        est, net = self.est, self.est.network_
        squares = sum(float(np.dot(la.w.ravel(), la.w.ravel())) for la in net.layers)
        loss = logs["loss"] * est._loss_scale + 0.5 * est.alpha * squares * self.n_batches / self.n_samples
        est.loss_curve_.append(loss)
        est.loss_ = loss
        est.n_iter_ += 1
        est.t_ += self.n_samples
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")  # scikit-learn's line
        if self.validation is not None:
            score = est._score_outputs(self.validation[1], net.predict(self.validation[0]))
            logs["val_score"] = score
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            worse = score < est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_params = [(aligned_copy(la.w), aligned_copy(la.b)) for la in net.layers]
        else:
            worse = loss > est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement_count = est._no_improvement_count + 1 if worse else 0
        opt = net.optimizer
        if est.solver == "sgd" and est.learning_rate == "invscaling":
            opt.lr = est._lr_scale * est.learning_rate_init / (est.t_ + 1) ** est.power_t
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.validation is not None else "Training loss"
            if est.solver == "sgd" and est.learning_rate == "adaptive" and opt.lr / est._lr_scale > 1e-6:
                opt.lr = opt.lr / 5.0
                est._no_improvement_count = 0
                if est.verbose:
                    print(f"{what} did not improve more than tol={est.tol:f} for "
                          f"{est.n_iter_no_change} consecutive epochs. Setting learning rate to "
                          f"{opt.lr / est._lr_scale:f}")
                return False
            if est.verbose:
                print(f"{what} did not improve more than tol={est.tol:f} for "
                      f"{est.n_iter_no_change} consecutive epochs. Stopping.")
            return True
        if est.n_iter_ == est.max_iter and not self.incremental:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=2)
        return False


class _BaseMLP(BaseEstimator):
    """What the two estimators share; see :class:`MLPClassifier`."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False, momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 backend=None, dtype="float32", init="auto"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.dtype = dtype
        self.init = init

    # -- the hyperparameters, checked at fit (scikit-learn's convention) -------------------
    def _check_params(self):
        bad = []

        def need(ok, name, what):
            if not ok:
                bad.append(f"{name} must be {what}, got {getattr(self, name)!r}")

        sizes = self.hidden_layer_sizes
        if _is_int(sizes):
            sizes = (sizes,)
        try:
            sizes = tuple(sizes)
        except TypeError:
            sizes = None
        need(sizes is not None and all(_is_int(s) and s >= 1 for s in sizes), "hidden_layer_sizes",
             "a sequence of positive ints")
        act = _ALIASES.get(self.activation, self.activation)
        need(act in _ACTIVATIONS, "activation", f"one of {['logistic', *_ACTIVATIONS]}")
        if self.solver == "lbfgs":
            bad.append("solver='lbfgs' is not available in fastnet, which trains by minibatches; "
                       "use 'sgd' or 'adam'")
        else:
            need(self.solver in ("sgd", "adam"), "solver", "'sgd' or 'adam'")
        need(_is_real(self.alpha) and self.alpha >= 0, "alpha", "a number >= 0")
        need(self.batch_size == "auto" or (_is_int(self.batch_size) and self.batch_size >= 1),
             "batch_size", "'auto' or a positive int")
        need(self.learning_rate in ("constant", "invscaling", "adaptive"), "learning_rate",
             "'constant', 'invscaling' or 'adaptive'")
        need(_is_real(self.learning_rate_init) and self.learning_rate_init > 0, "learning_rate_init",
             "a number > 0")
        need(_is_real(self.power_t) and self.power_t >= 0, "power_t", "a number >= 0")
        need(_is_int(self.max_iter) and self.max_iter >= 1, "max_iter", "a positive int")
        need(_is_real(self.tol) and self.tol >= 0, "tol", "a number >= 0")
        need(_is_real(self.momentum) and 0 <= self.momentum <= 1, "momentum", "a number in [0, 1]")
        need(_is_real(self.validation_fraction) and 0 < self.validation_fraction < 1,
             "validation_fraction", "a number in (0, 1)")
        for name in ("beta_1", "beta_2"):
            need(_is_real(getattr(self, name)) and 0 <= getattr(self, name) < 1, name, "a number in [0, 1)")
        need(_is_real(self.epsilon) and self.epsilon > 0, "epsilon", "a number > 0")
        need(_is_int(self.n_iter_no_change) and self.n_iter_no_change >= 1, "n_iter_no_change",
             "a positive int")
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            need(isinstance(getattr(self, name), (bool, np.bool_)), name, "True or False")
        need(_is_int(self.verbose) or isinstance(self.verbose, (bool, np.bool_)), "verbose",
             "True, False or an int")
        try:
            dtype_ok = np.dtype(self.dtype) in (np.float32, np.float64)
        except TypeError:
            dtype_ok = False
        need(dtype_ok, "dtype", "'float32' or 'float64'")
        need(self.init == "auto" or self.init in INIT_NAMES, "init", f"'auto' or one of {list(INIT_NAMES)}")
        if bad:
            raise ValueError("; ".join(bad))
        return sizes, act

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) and ``y`` for up to ``max_iter``
        epochs; returns self.  A new network unless ``warm_start`` and fitted."""
        return self._fit(X, y, incremental=False)

    def _fit(self, X, y, incremental, classes=None):
        sizes, act = self._check_params()
        fitted = hasattr(self, "network_")
        first = not fitted or not (self.warm_start or incremental)
        if not first:  # warm_start or partial_fit: the network must be the one asked for
            hidden = self.network_.layers[:-1]
            have = (tuple(la.neurons_num for la in hidden), {la.activation.name for la in hidden} or {act})
            if have != (sizes, {act}):
                raise ValueError(f"the fitted network has hidden layers {have[0]} of {sorted(have[1])}, "
                                 f"the parameters ask for {sizes} of {act!r}; call fit with "
                                 "warm_start=False to start again")
        dtype = np.dtype(self.dtype) if first else self.network_.dtype
        X, y = validate_data(self, X, y, reset=first, dtype=(np.float64, np.float32), multi_output=True,
                             y_numeric=isinstance(self, RegressorMixin))
        X = np.ascontiguousarray(X, dtype=dtype)
        # everything that can be refused is checked before any attribute changes
        targets, meta = self._targets(y, first, classes, dtype)
        n_outputs = meta.get("n_outputs_", getattr(self, "n_outputs_", None))
        n = X.shape[0]
        batch = min(200, n) if self.batch_size == "auto" else self.batch_size
        if batch > n:
            warnings.warn("Got `batch_size` larger than the sample size. It is going to be clipped",
                          stacklevel=3)
            batch = n
        seeds = self._seeds(len(sizes) + 3) if first else None
        split_seed = int(np.random.default_rng(seeds[-2]).integers(2**31 - 1)) if first else self._split_seed
        loss = self._loss(meta.get("_kind", getattr(self, "_kind", None)))
        c, loss_scale = _sklearn_scales(loss.name, n_outputs)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early = self.early_stopping
        validation = None
        if early:
            # stratified on the class (scikit-learn stratifies binary targets only); not multilabel
            stratify = None
            if isinstance(self, ClassifierMixin) and (targets.ndim == 1 or targets.shape[1] == 1):
                stratify = targets.reshape(-1)
            X, Xv, targets, tv = train_test_split(X, targets, test_size=self.validation_fraction,
                                                  random_state=split_seed, stratify=stratify)
            if Xv.shape[0] < 2:
                raise ValueError(f"The validation set is too small: it holds {Xv.shape[0]} sample(s). "
                                 "Increase 'validation_fraction' or the size of your dataset.")
            validation = (Xv, tv)
            n = X.shape[0]
            batch = min(batch, n)
        optimizer = self._optimizer(c, batch) if first or not incremental else None
        if first:
            for key, value in meta.items():
                setattr(self, key, value)
            self._split_seed = split_seed
            self._shuffle_rng = np.random.default_rng(seeds[-1])
            self.network_ = self._network(X.shape[1], sizes, act, seeds, dtype, loss, optimizer)
            # as scikit-learn: these start at a first fit and go on over warm starts and partial_fit
            self.loss_curve_, self.t_, self._no_improvement_count = [], 0, 0
            self.best_loss_ = self.validation_scores_ = self.best_validation_score_ = None
        elif optimizer is not None:
            # scikit-learn makes a new optimizer at every fit (warm_start too), keeps it for partial_fit
            self.network_.optimizer = optimizer
        self._loss_scale = loss_scale
        self._lr_scale = c if self.solver == "sgd" else 1.0
        if early and self.validation_scores_ is None:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
        elif not early and self.best_loss_ is None:
            self.best_loss_, self.validation_scores_, self.best_validation_score_ = np.inf, None, None
        self._best_params = None
        self.n_iter_ = 0  # the epochs of this call, as scikit-learn counts them
        conv = _Convergence(self, n, -(-n // batch), validation, incremental)
        try:
            self.network_.fit(X, targets, epochs=1 if incremental else self.max_iter, batch_size=batch,
                              shuffle=bool(self.shuffle), progress=bool(self.verbose), rng=self._shuffle_rng,
                              callbacks=[conv])
        except KeyboardInterrupt:  # as scikit-learn: keep what was trained (the last completed step)
            warnings.warn("Training interrupted by user.", stacklevel=3)
        if early and self._best_params is not None:  # scikit-learn keeps the best validation epoch
            for layer, (w, b) in zip(self.network_.layers, self._best_params, strict=True):
                layer.w, layer.b = w, b
        self._best_params = None
        return self

    def _seeds(self, count):
        """The seeds of one fit: an int ``random_state`` seeds
        ``numpy.random.SeedSequence(random_state)`` and its ``spawn(count)``
        children seed, in order, the layers (input to output), the validation
        split and the shuffling.  Other values go through scikit-learn's
        ``check_random_state`` and give it an int seed first."""
        rs = self.random_state
        if not _is_int(rs):
            rs = int(check_random_state(rs).randint(np.iinfo(np.int32).max))
        return np.random.SeedSequence(rs).spawn(count)

    def _network(self, n_features, sizes, act, seeds, dtype, loss, optimizer):
        if self.init == "auto":
            init = _GlorotUniform(2.0 if act == "sigmoid" else 6.0)
        else:
            init = get_init(self.init)
        widths = (*sizes, self.n_outputs_)
        layers = [DenseLayer(act if i < len(sizes) else "identity", n_features if i == 0 else None,
                             init, neurons_num=width, dtype=dtype, rng=np.random.default_rng(seeds[i]),
                             backend=self.backend)
                  for i, width in enumerate(widths)]
        return NeuralNetwork(layers, loss, optimizer, backend=self.backend)

    def _optimizer(self, c, batch):
        decay = self.alpha / (batch * c)
        if self.solver == "sgd":
            return SGD(self.learning_rate_init * c, momentum=self.momentum,
                       nesterov=bool(self.nesterovs_momentum and self.momentum > 0), weight_decay=decay)
        return Adam(self.learning_rate_init, beta1=self.beta_1, beta2=self.beta_2, eps=self.epsilon / c,
                    weight_decay=decay)

    # -- fitted attributes ------------------------------------------------------------------
    @property
    def coefs_(self):
        """The weight matrices, (n_in, n_out) per layer: views of the network's
        own arrays (writing into them changes the network; the next ``fit``
        or ``partial_fit`` checks them)."""
        check_is_fitted(self, "network_")
        return [la.w for la in self.network_.layers]

    @property
    def intercepts_(self):
        """The bias vectors, (n_out,) per layer: views, as ``coefs_``."""
        check_is_fitted(self, "network_")
        return [la.b[0] for la in self.network_.layers]

    @property
    def n_layers_(self):
        check_is_fitted(self, "network_")
        return len(self.network_.layers) + 1

    @property
    def out_activation_(self):
        check_is_fitted(self, "network_")
        return _OUT_ACTIVATION[self.network_.loss.name]

    def _outputs_input(self, X):
        check_is_fitted(self, "network_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return np.ascontiguousarray(X, dtype=self.network_.dtype)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier with scikit-learn's interface,
    trained by fastnet.

    The hyperparameters are those of ``sklearn.neural_network.MLPClassifier``
    (solvers "sgd" and "adam"), with the same names, defaults and meanings;
    ``activation`` also takes fastnet's "sigmoid" (= "logistic"),
    "leaky_relu", "elu", "softplus" and "gelu".  fastnet's own:

    backend : None (fastnet's default, "auto"), "numpy" or "numba".
    dtype : "float32" (default) or "float64": the network's arithmetic.
    init : "auto" (scikit-learn's: weights and biases Glorot uniform) or the name
        of a ``fastnet.WeightInit`` function (biases zero).

    See :mod:`fastnet.estimators` for how the hyperparameters map onto
    fastnet's optimizers and what differs from scikit-learn.

    Labels may be of any kind (strings, non-contiguous integers); a 2-D 0/1
    indicator ``y`` is a multilabel problem, trained with the logistic loss on
    each label.  Attributes after ``fit``: ``classes_``, ``n_features_in_``,
    ``feature_names_in_`` (for DataFrames with string column names),
    ``loss_``, ``loss_curve_``, ``best_loss_``, ``validation_scores_``,
    ``best_validation_score_``, ``n_iter_``, ``t_``, ``n_layers_``,
    ``n_outputs_``, ``out_activation_``, ``coefs_``, ``intercepts_`` and the
    trained ``network_`` (a :class:`fastnet.NeuralNetwork`).
    """

    def partial_fit(self, X, y, classes=None):
        """One epoch over ``X``, ``y`` (in minibatches of ``batch_size``),
        continuing from the current state, optimizer state included.  The first
        call needs ``classes``, every label that will ever be seen."""
        if not hasattr(self, "network_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        return self._fit(X, y, incremental=True, classes=classes)

    @staticmethod
    def _loss(kind):
        return SoftmaxCrossEntropy() if kind == "multiclass" else BinaryCrossEntropy()

    def _targets(self, y, first, classes, dtype):
        """(the network's targets, the attributes a first fit sets)."""
        kind = type_of_target(y, input_name="y", raise_unknown=True)
        if kind not in ("binary", "multiclass", "multilabel-indicator"):
            raise ValueError(f"MLPClassifier takes class labels or a multilabel 0/1 indicator matrix, "
                             f"got a target of type {kind!r}")
        meta = {}
        if first:
            multilabel = kind == "multilabel-indicator"
            labels = np.arange(y.shape[1]) if multilabel else np.unique(y if classes is None else classes)
            k = len(labels)
            meta = {"classes_": labels, "n_outputs_": k if k != 2 or multilabel else 1,
                    "_kind": "multilabel" if multilabel else ("multiclass" if k > 2 else "binary")}
        kind_now = meta.get("_kind", getattr(self, "_kind", None))
        labels = meta.get("classes_", getattr(self, "classes_", None))
        if (kind == "multilabel-indicator") != (kind_now == "multilabel") or (
                kind_now == "multilabel" and y.shape[1] != len(labels)):
            raise ValueError(f"y is a {kind!r} target, not the kind this estimator was fitted on "
                             f"({kind_now}, classes {labels.tolist()})")
        if kind_now == "multilabel":
            return np.asarray(y, dtype=dtype), meta
        y = column_or_1d(y, warn=True)  # a column vector: scikit-learn's DataConversionWarning
        unseen = np.setdiff1d(y, labels)
        if unseen.size:
            raise ValueError(f"y holds labels that are not in classes_ {labels.tolist()}: "
                             f"{unseen.tolist()[:10]}")
        codes = np.searchsorted(labels, y)
        if kind_now == "multiclass":
            return codes.astype(np.int64), meta
        return (codes == 1).astype(dtype).reshape(-1, 1), meta  # one class only: all 0, the first

    def _score_outputs(self, t, pred):
        """Accuracy of the network's predictions ``pred`` on its targets ``t``."""
        if self._kind == "binary":
            t, pred = t[:, 0].astype(np.int64), pred.reshape(-1)
        elif self._kind == "multilabel":
            t = t.astype(np.int64)
        return accuracy_score(t, pred)

    def predict(self, X):
        """The predicted labels, (n_samples,), or an indicator matrix for multilabel targets."""
        X = self._outputs_input(X)
        if self._kind == "multilabel":
            return self.network_.predict(X).reshape(X.shape[0], -1)
        if self._kind == "multiclass":
            return self.classes_[self.network_.predict(X)]
        return self.classes_[self.network_.predict(X).reshape(-1)]

    def predict_proba(self, X):
        """Class probabilities, (n_samples, n_classes) in the order of
        ``classes_``, float64 (rows sum to 1 but for multilabel targets)."""
        X = self._outputs_input(X)
        p = self.network_.predict_proba(X).astype(np.float64)
        if self._kind == "multiclass":
            return p / p.sum(axis=1, keepdims=True)  # float32's rounding of the sum removed
        if self._kind == "binary" and len(self.classes_) == 2:
            return np.hstack([1.0 - p, p])
        if self._kind == "binary":  # one class seen
            return np.ones((p.shape[0], 1))
        return p

    def predict_log_proba(self, X):
        """The logarithm of ``predict_proba``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor with scikit-learn's interface,
    trained by fastnet on the squared error; ``y`` is 1-D or 2-D.

    The hyperparameters and attributes are those of
    ``sklearn.neural_network.MLPRegressor``; see :class:`MLPClassifier` for
    fastnet's own (``backend``, ``dtype``, ``init``) and
    :mod:`fastnet.estimators` for the mapping.  ``predict`` returns 1-D
    predictions when the network has one output, as scikit-learn does.
    """

    def partial_fit(self, X, y):
        """One epoch over ``X``, ``y``, continuing from the current state."""
        return self._fit(X, y, incremental=True)

    @staticmethod
    def _loss(kind):
        return MeanSquaredError()

    def _targets(self, y, first, classes, dtype):
        y = np.asarray(y, dtype=dtype)
        y = np.ascontiguousarray(y.reshape(-1, 1) if y.ndim == 1 else y)
        if first:
            return y, {"n_outputs_": y.shape[1]}
        if y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y.shape[1]} outputs, the fitted network {self.n_outputs_}")
        return y, {}

    @staticmethod
    def _score_outputs(t, pred):
        return r2_score(t, pred)

    def predict(self, X):
        """The predicted values, (n_samples,) or (n_samples, n_outputs)."""
        X = self._outputs_input(X)
        out = self.network_.predict(X).astype(np.float64)  # scikit-learn's regressors give float64
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

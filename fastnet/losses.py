"""Losses: ``value(y_pred, y_true)`` is the mean over the batch of a per-sample
loss, ``grad(y_pred, y_true)`` its per-sample gradient with respect to
``y_pred`` (not divided by the batch size: the layers average their parameter
gradients over the batch).

The cross-entropies take logits, i.e. the output layer's activation must be the
identity.  That is what makes their gradients the simple ``softmax(z) - t`` and
``sigmoid(z) - t``: the softmax or sigmoid is fused into the loss, computed
stably, instead of being an activation whose derivative would be chained in.
"""

import numpy as np

from fastnet._validation import as_array, cast_finite, check_finite, describe
from fastnet.kernels import ACTIVATION_CODES, LOSS_CODES
from fastnet.kernels import numpy as _ref


class Loss:
    """Base of the losses; ``name`` selects the kernel."""

    name = None
    #: True when the loss takes logits (the output activation must be identity).
    takes_logits = False
    #: True when ``accuracy`` and ``predict_proba`` mean something.
    is_classifier = False
    #: How ``accuracy`` counts, as a code of ``fastnet.kernels.ACCURACIES``
    #: (the compiled epochs of ``fit`` count the same way).
    accuracy_code = 0

    @property
    def code(self):
        return LOSS_CODES[self.name]

    def value(self, y_pred, y_true):
        """Mean over the batch of the per-sample loss, as a Python float."""
        z, t = self._pair(y_pred, y_true)
        return float(_ref.loss_value(self.code, z, t))

    def grad(self, y_pred, y_true):
        """Per-sample gradient of the loss with respect to ``y_pred``, shape (B, C)."""
        z, t = self._pair(y_pred, y_true)
        return _ref.loss_grad(self.code, z, t, np.empty_like(z))

    def _pair(self, y_pred, y_true):
        z = as_array(y_pred, "y_pred")
        if z.dtype not in (np.float32, np.float64) or z.ndim != 2:
            raise TypeError(
                f"y_pred must be a 2-D float32 or float64 array (batch, outputs), got {describe(z)}"
            )
        check_finite(z, "y_pred")
        z = np.ascontiguousarray(z)
        return z, self.prepare_targets(y_true, z.shape[0], z.shape[1], z.dtype)

    def prepare_targets(self, y, n_samples, n_outputs, dtype, out=None):
        """Validate targets for ``n_samples`` rows of ``n_outputs`` outputs and
        return them as a C-contiguous (n_samples, n_outputs) array of ``dtype``.

        ``out``, an array of that shape and dtype, may be filled and returned
        instead of a new array where the targets must be built (class labels)."""
        raise NotImplementedError

    def _float_targets(self, y, n_samples, n_outputs, dtype, allow_labels):
        arr = as_array(y, "y")
        kinds = "fiub" if allow_labels else "f"
        if arr.dtype.kind not in kinds:
            what = "float or integer 0/1" if allow_labels else "floating-point"
            raise TypeError(f"{self.name} targets must be {what}, got {describe(arr)}")
        if arr.ndim == 1 and n_outputs == 1:
            arr = arr.reshape(-1, 1)
        _check_shape(arr, n_samples, n_outputs)
        return cast_finite(arr, dtype, "y")

    def predict(self, out):
        """Predictions from network outputs: the outputs themselves by default."""
        return out

    def accuracy(self, out, t):
        """Fraction of correct predictions, or None for a regression loss."""
        return None

    def __repr__(self):
        return f"{type(self).__name__}()"


def _check_shape(arr, n_samples, n_outputs):
    if arr.shape != (n_samples, n_outputs):
        raise ValueError(
            f"targets must have shape ({n_samples}, {n_outputs}) to match the output, "
            f"got {describe(arr)}"
        )


class MeanSquaredError(Loss):
    """Per sample: the mean over the outputs of (y_pred - y_true)^2.

    Targets are floats of shape (B, C), or (B,) when C = 1.
    """

    name = "mse"

    def prepare_targets(self, y, n_samples, n_outputs, dtype, out=None):
        return self._float_targets(y, n_samples, n_outputs, dtype, allow_labels=False)


class SoftmaxCrossEntropy(Loss):
    """Softmax fused with the cross-entropy, on logits: per sample
    logsumexp(z) - z . t, computed stably for large |z|.

    Targets are integer class labels of shape (B,) in [0, C), or one-hot rows
    (or probability distributions) of shape (B, C).
    """

    name = "softmax_xent"
    takes_logits = True
    is_classifier = True
    accuracy_code = 1

    def prepare_targets(self, y, n_samples, n_outputs, dtype, out=None):
        arr = as_array(y, "y")
        if arr.ndim == 1:
            if arr.dtype.kind not in "iu":
                raise TypeError(f"class labels must be integers, got {describe(arr)}")
            if arr.shape[0] != n_samples:
                raise ValueError(f"expected {n_samples} labels to match the batch, got {arr.shape[0]}")
            if arr.itemsize == 8:  # one comparison: negatives wrap to unsigned values >= 2**63
                unsigned = arr if arr.dtype.kind == "u" else arr.view(arr.dtype.str.replace("i", "u"))
                bad = bool((unsigned >= n_outputs).any())
            else:
                bad = bool(arr.size) and (arr.min() < 0 or arr.max() >= n_outputs)
            if bad:
                raise ValueError(
                    f"class labels must be in [0, {n_outputs}), got values from "
                    f"{arr.min()} to {arr.max()}"
                )
            shape = (n_samples, n_outputs)
            if out is not None and out.shape == shape and out.dtype == dtype:
                t = out
                t.fill(0)
            else:
                t = np.zeros(shape, dtype=dtype)
            t[np.arange(n_samples), arr] = 1
            return t
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"one-hot targets must be numeric, got {describe(arr)}")
        _check_shape(arr, n_samples, n_outputs)
        check_finite(arr, "y")
        sums = arr.sum(axis=1)
        bad = (arr < 0).any(axis=1) | ~np.isclose(sums, 1, atol=1e-3)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                "one-hot targets must be non-negative rows that sum to 1, got row "
                f"{i} with sum {float(sums[i])!r} and minimum {float(arr[i].min())!r}"
            )
        return np.ascontiguousarray(arr, dtype=dtype)

    def predict(self, out):
        return out.argmax(axis=1)

    def predict_proba(self, out):
        return _ref.softmax(out, np.empty_like(out))

    def accuracy(self, out, t):
        return float(np.mean(out.argmax(axis=1) == t.argmax(axis=1)))


class BinaryCrossEntropy(Loss):
    """Sigmoid fused with the binary cross-entropy, on logits: per sample the
    mean over the outputs of log(1 + e^z) - t z, computed stably.

    Targets are 0/1 labels (bool, int or float) or probabilities in [0, 1], of
    shape (B, C), or (B,) when C = 1.
    """

    name = "bce_logits"
    takes_logits = True
    is_classifier = True
    accuracy_code = 2

    def prepare_targets(self, y, n_samples, n_outputs, dtype, out=None):
        t = self._float_targets(y, n_samples, n_outputs, dtype, allow_labels=True)
        if t.min() < 0 or t.max() > 1:
            raise ValueError(f"binary targets must lie in [0, 1], got values from {t.min()} to {t.max()}")
        return t

    def predict(self, out):
        labels = (out > 0).astype(np.int64)
        return labels[:, 0] if labels.shape[1] == 1 else labels

    def predict_proba(self, out):
        return _ref.activation_forward(ACTIVATION_CODES["sigmoid"], 0.0, out, np.empty_like(out))

    def accuracy(self, out, t):
        return float(np.mean((out > 0) == (t >= 0.5)))


_BY_NAME = {cls.name: cls for cls in (MeanSquaredError, SoftmaxCrossEntropy, BinaryCrossEntropy)}
_ALIASES = {
    "mean_squared_error": "mse",
    "cross_entropy": "softmax_xent",
    "softmax_cross_entropy": "softmax_xent",
    "binary_cross_entropy": "bce_logits",
    "bce": "bce_logits",
}


def get_loss(spec):
    """A loss object from an object or a name (``"mse"``, ``"softmax_xent"``, ``"bce_logits"``)."""
    if isinstance(spec, Loss):
        return spec
    if isinstance(spec, type) and issubclass(spec, Loss):
        return spec()
    if not isinstance(spec, str):
        raise TypeError(f"loss must be a Loss object or a name such as 'softmax_xent', got {spec!r:.80}")
    key = _ALIASES.get(spec.lower(), spec.lower())
    if key in _BY_NAME:
        return _BY_NAME[key]()
    raise ValueError(
        f"unknown loss {spec!r}; expected a Loss object or one of "
        f"{sorted(_BY_NAME) + sorted(_ALIASES)}"
    )

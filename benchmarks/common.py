"""Seeded data shared by the benchmarks.

Append only: a generator, once used by a benchmark, keeps its seed and its
draws forever, so that results stay comparable across the history.  Add new
generators below; never change one.
"""

import numpy as np

import fastnet


def dense_inputs(batch, width, dtype):
    """(x, dy, target) for a width x width layer: standard normal, seed 1234."""
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((batch, width)).astype(dtype)
    dy = rng.standard_normal((batch, width)).astype(dtype)
    target = rng.standard_normal((batch, width)).astype(dtype)
    return x, dy, target


def classification_inputs(batch, n_inputs, n_classes, dtype):
    """(x, labels) for an MLP: standard normal inputs and uniform labels, seed 4321."""
    rng = np.random.default_rng(4321)
    x = rng.standard_normal((batch, n_inputs)).astype(dtype)
    return x, rng.integers(0, n_classes, size=batch)


def require_backend(backend):
    """Skip (asv: NotImplementedError in setup) when the backend is not available here."""
    if backend not in fastnet.available_backends():
        raise NotImplementedError(f"backend {backend!r} is not available")


def blob_classification(n, n_inputs, n_classes, dtype):
    """(X, labels): a realistic-looking classification set without scikit-learn
    (asv's environments do not have it): ``n_classes`` Gaussian clusters in
    ``n_inputs`` dimensions with unit noise around centres drawn with scale
    1.5, labels uniform; seed 2468."""
    rng = np.random.default_rng(2468)
    centres = rng.normal(scale=1.5, size=(n_classes, n_inputs))
    labels = rng.integers(0, n_classes, size=n)
    X = centres[labels] + rng.standard_normal((n, n_inputs))
    return X.astype(dtype), labels

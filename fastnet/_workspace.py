"""Workspaces that grow to the largest batch seen and are reused for smaller ones."""

import numpy as np


def rows(store, name, batch, width, dtype):
    """The first ``batch`` rows of ``store[name]``, a (rows, width) array grown
    when a larger batch arrives.  The view is C-contiguous, so a short last
    batch or a prediction chunk of another size reuses memory instead of
    reallocating."""
    buf = store.get(name)
    if buf is None or buf.shape[0] < batch:
        buf = store[name] = np.empty((batch, width), dtype)
    return buf[:batch]

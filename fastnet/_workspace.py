"""Arrays for the kernels: 64-byte aligned, and workspaces reused across batches.

NumPy aligns its allocations to 16 bytes only.  The compiled kernels load
32- or 64-byte vectors along the rows of the weights and workspaces; when a
row starts 16 or 48 bytes past a cache line, every other 32-byte load spans
two lines.  Measured on Zen 3 (784 x 256 layer, B = 16, float32, side by
side): ``x @ w`` 1.19x and the SGD update 1.25x slower at offsets 16 and 48
than at 0 and 32, the whole fused MLP step 1.15x.  So every array fastnet
allocates for the kernels starts on a cache line (and, where a row is a
multiple of 64 bytes, so does every row): the layers' weights (``DenseLayer.build``
keeps its own aligned copies), the optimizers' state and the layers' and
networks' workspaces.  Copies made by ``copy.deepcopy`` or pickle are realigned
as they are restored (``realigned``); arrays assigned later (``layer.w = ...``)
are used as they are.
"""

import numpy as np

from fastnet._changes import WatchedDict, WatchedList

ALIGN = 64  # bytes: one cache line


def aligned_empty(shape, dtype):
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(nbytes + ALIGN, np.uint8)
    start = -buf.ctypes.data % ALIGN
    return buf[start:start + nbytes].view(dtype).reshape(shape)


def aligned_zeros(shape, dtype):
    """``aligned_empty`` filled with zeros."""
    out = aligned_empty(shape, dtype)
    out[...] = 0
    return out


def is_aligned(a):
    """Whether ``a`` is C-contiguous and starts on a 64-byte boundary."""
    return a.flags.c_contiguous and a.ctypes.data % ALIGN == 0


def aligned_copy(a, dtype=None):
    """A copy of ``a`` (as ``dtype``), C-contiguous and 64-byte aligned."""
    a = np.asarray(a)
    out = aligned_empty(a.shape, a.dtype if dtype is None else dtype)
    out[...] = a
    return out


def realigned(value, memo=None):
    """``value`` with every C-contiguous array in it (through dicts, lists and
    tuples) that does not start on a 64-byte boundary replaced by an aligned
    copy; an array met twice in ``value`` is copied once, so arrays it shares
    stay shared.

    NumPy's copies (``copy.deepcopy``, unpickling) align to 16 bytes only; the
    objects that own kernel arrays call this as their state is restored.
    """
    memo = {} if memo is None else memo
    if isinstance(value, np.ndarray):
        if id(value) not in memo:
            keep = not value.flags.c_contiguous or value.ctypes.data % ALIGN == 0
            memo[id(value)] = (value, value if keep else aligned_copy(value))
        return memo[id(value)][1]  # the original is held in memo, so its id is not reused
    if type(value) in (dict, WatchedDict):
        return type(value)({k: realigned(v, memo) for k, v in value.items()})
    if type(value) in (list, tuple, WatchedList):
        return type(value)(realigned(v, memo) for v in value)
    return value


def rows(store, name, batch, width, dtype):
    """The first ``batch`` rows of ``store[name]``, a (rows, width) array grown
    when a larger batch arrives (or anew when a layer's width or dtype was
    changed).  The view is C-contiguous, so a short last batch or a prediction
    chunk of another size reuses memory instead of reallocating."""
    buf = store.get(name)
    if buf is None or buf.shape[0] < batch or buf.shape[1] != width or buf.dtype != dtype:
        buf = store[name] = aligned_empty((batch, width), dtype)
    return buf[:batch]

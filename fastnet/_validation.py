"""Checks on user input, done before anything is changed.

Every public entry point validates its arguments here first, so that a bad
call raises a ``TypeError`` or ``ValueError`` naming what was expected and what
was given, and leaves parameters and optimizer state exactly as they were.
"""

import numbers

import numpy as np


def describe(x):
    """A short description of an array for error messages."""
    return f"array of dtype {x.dtype} and shape {x.shape}"


def as_array(x, name):
    """np.asarray(x), refusing things that are not numeric arrays."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be an array, got {type(x).__name__}: {exc}") from None
    if arr.dtype.kind in "OSUV":
        raise TypeError(f"{name} must be a numeric array, got {describe(arr)}")
    return arr


_SMALL = 4096  # elements: below this a boolean temporary is cheaper than the sum's errstate


def all_finite(arr):
    """True when every value of a numeric array is finite, without a temporary
    array of the input's size: a finite sum proves it (NaN and inf propagate),
    and only a sum that overflowed needs the elementwise check.  Small arrays
    (a few KB of booleans) take the direct check, which costs less per call."""
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return True
    if arr.size <= _SMALL:
        return bool(np.isfinite(arr).all())
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(arr, axis=None)
    return bool(np.isfinite(total)) or bool(np.isfinite(arr).all())


def check_finite(arr, name):
    if not all_finite(arr):
        raise ValueError(f"{name} contains NaN or inf; expected finite values")


def kernel_ready(arr):
    """``arr``, or a copy of it where the compiled kernels would take it for
    another type: numba types read-only and unaligned arrays apart from the
    others and compiles every kernel they reach once more for them (seconds,
    for one read-only batch).  The caller's array is never written either way."""
    if arr.flags.writeable and arr.flags.aligned:
        return arr
    return arr.copy()


def cast_finite(arr, dtype, name, writeable=True):
    """arr C-contiguous in ``dtype``, refusing NaN or inf before and after the cast;
    with ``writeable``, also writeable and aligned (``kernel_ready``).

    Casting float64 to float32 turns values beyond float32's range into inf,
    so finiteness is checked again on the cast copy (numpy's overflow warning
    is silenced: the ValueError says it better).
    """
    check_finite(arr, name)
    if arr.dtype == dtype:
        out = np.ascontiguousarray(arr)
        return kernel_ready(out) if writeable else out
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=dtype)
    if not all_finite(out):
        raise ValueError(
            f"{name} has values beyond the range of {out.dtype} (largest magnitude "
            f"{float(np.abs(arr).max())!r}); they overflow to inf when cast from {arr.dtype}"
        )
    return out


def as_float_batch(x, n_features, dtype, name="x", cast=True, writeable=True):
    """Validate a (batch, features) input and return it C-contiguous in ``dtype``
    (and, with ``writeable``, ready for the kernels: see ``kernel_ready``; whole
    data sets are passed through as they are and made ready batch by batch).

    Floating inputs of another precision are cast when ``cast`` is true (the
    network API, documented there) and refused otherwise (the layer API).
    """
    arr = as_array(x, name)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got {describe(arr)}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (batch, features), got {describe(arr)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {arr.shape}); expected at least 1 row")
    if arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features per row, expected {n_features}")
    if arr.dtype != dtype and not cast:
        raise TypeError(
            f"{name} has dtype {arr.dtype} but the layer computes in {np.dtype(dtype)}; "
            f"cast it explicitly, e.g. {name}.astype(np.{np.dtype(dtype)})"
        )
    return cast_finite(arr, dtype, name, writeable)


def flag(value, name):
    """value as a bool: True or False (NumPy's bools included), nothing else,
    since a flag read for truthiness would take "no" as True."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def random_generator(rng, name="rng"):
    """np.random.default_rng(rng), refusing what it refuses with ``name`` in the message."""
    if isinstance(rng, (bool, np.bool_)):
        raise TypeError(f"{name} must be None, an int >= 0 or a numpy Generator, got {rng!r}")
    try:
        return np.random.default_rng(rng)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name} must be None, an int >= 0 or a numpy Generator, got {rng!r} "
                        f"({exc})") from None


def positive_int(value, name):
    """value as an int, refusing bools, non-integers and values < 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def real_number(value, name, low=None, high=None, low_open=False, high_open=False):
    """value as a finite float within [low, high] (ends open when asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    bad = not np.isfinite(value)
    if low is not None:
        bad |= value <= low if low_open else value < low
    if high is not None:
        bad |= value >= high if high_open else value > high
    if bad:
        lo = "-inf" if low is None else repr(float(low))
        hi = "inf" if high is None else repr(float(high))
        interval = ("(" if low_open else "[") + f"{lo}, {hi}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be finite and in {interval}, got {value!r}")
    return value

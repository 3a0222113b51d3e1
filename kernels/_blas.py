"""``C = alpha * A @ B + beta * C`` (and ``y += alpha * x``) by a direct call of
the BLAS that NumPy uses.

``np.matmul`` has no ``alpha`` and no ``beta``, so a scaled product costs an
extra pass over its result (``dw = x.T @ dz / B``), and an update ``w -= lr *
x.T @ g`` needs a temporary.  ``gemm`` calls BLAS's own ``?gemm``, which
applies both inside the product.

Only a NumPy built on OpenBLAS is supported (NumPy's wheels are): its library
is found among those loaded in the process by threadpoolctl (the one inside
NumPy's folder, or the only OpenBLAS loaded), its CBLAS symbols may carry a
prefix and a suffix (``scipy_cblas_sgemm64_`` in NumPy's wheels), and its
integers are 64 bits wide when its configuration string says ``USE64BITINT``.
Where there is no such library, or an operand is not one BLAS can read in
place, ``gemm`` returns ``None`` and the caller falls back to NumPy;
``available()`` tells which.
"""

import ctypes
import itertools

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


class _Gemm:
    """The ctypes functions ``?gemm`` and ``?axpy`` of one OpenBLAS library."""

    def __init__(self, path):
        lib = ctypes.CDLL(path)
        for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
            names = (f"{prefix}cblas_sgemm{suffix}", f"{prefix}openblas_get_config{suffix}")
            if all(hasattr(lib, name) for name in names):
                break
        else:
            raise LookupError(f"no cblas_sgemm in {path}")
        config = getattr(lib, f"{prefix}openblas_get_config{suffix}")
        config.restype = ctypes.c_char_p
        wide = b"USE64BITINT" in (config() or b"")
        int_t = ctypes.c_int64 if wide else ctypes.c_int32
        self.max_int = 2**63 - 1 if wide else 2**31 - 1  # ctypes would wrap a larger int silently
        self.path = path
        self.functions, self.axpys = {}, {}
        for letter, dtype, real in (("s", np.float32, ctypes.c_float), ("d", np.float64, ctypes.c_double)):
            f = getattr(lib, f"{prefix}cblas_{letter}gemm{suffix}")
            f.restype = None
            f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, int_t, int_t, int_t, real,
                          ctypes.c_void_p, int_t, ctypes.c_void_p, int_t, real, ctypes.c_void_p, int_t]
            self.functions[np.dtype(dtype)] = f
            f = getattr(lib, f"{prefix}cblas_{letter}axpy{suffix}", None)
            if f is not None:
                f.restype = None
                f.argtypes = [int_t, real, ctypes.c_void_p, int_t, ctypes.c_void_p, int_t]
                self.axpys[np.dtype(dtype)] = f


def _numpy_blas_name():
    try:
        return np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:  # an older NumPy or another layout of its configuration
        return ""


def _find():
    if "openblas" not in _numpy_blas_name().lower():
        return None  # NumPy computes with another BLAS: do not mix in an OpenBLAS of someone else's
    try:
        from threadpoolctl import threadpool_info

        paths = [p["filepath"] for p in threadpool_info() if p.get("internal_api") == "openblas"]
    except Exception:  # threadpoolctl could not inspect this process: no direct BLAS
        return None
    own = [p for p in paths if "numpy" in p.lower()]
    for path in own or (paths if len(paths) == 1 else []):
        try:
            return _Gemm(path)
        except (OSError, LookupError, AttributeError):
            continue
    return None


_GEMM = None
_SEARCHED = False


def _library():
    global _GEMM, _SEARCHED
    if not _SEARCHED:
        _GEMM, _SEARCHED = _find(), True
    return _GEMM


def available():
    """The path of the OpenBLAS library ``gemm`` calls, or None (NumPy fallback)."""
    lib = _library()
    return None if lib is None else lib.path


def function(dtype):
    """``(the ctypes function cblas_?gemm for dtype, whether its integers are 64
    bits)``, or None where ``gemm`` has no BLAS to call (compiled code calls it
    by address: ``fastnet.kernels.numba.blas``)."""
    lib = _library()
    f = None if lib is None else lib.functions.get(np.dtype(dtype))
    return None if f is None else (f, lib.max_int > 2**31)


def axpy_function(dtype):
    """The ctypes function ``cblas_?axpy`` for dtype, of the library ``function``
    gives ``?gemm`` from (its integers as wide), or None."""
    lib = _library()
    return None if lib is None else lib.axpys.get(np.dtype(dtype))


def axpy(alpha, x, y):
    """y += alpha * x in place, by BLAS, over every element of two C-contiguous
    arrays of one shape and dtype, y writeable and not overlapping x; True
    when done, ``None`` (y untouched) where there is no BLAS ``?axpy`` or an
    operand does not fit: compute it another way then."""
    if x.shape != y.shape:
        raise ValueError(f"axpy: shapes {x.shape} and {y.shape} do not match")
    f = axpy_function(y.dtype)
    if (f is None or x.dtype != y.dtype or not y.flags.writeable
            or not (x.flags.c_contiguous and y.flags.c_contiguous and x.flags.aligned and y.flags.aligned)
            or y.size > _library().max_int or np.may_share_memory(x, y)):
        return None
    if y.size:
        f(y.size, alpha, x.ctypes.data, 1, y.ctypes.data, 1)
    return True


def _operand(m):
    """(transpose flag, leading dimension) of a 2-D operand BLAS can read in place, or None."""
    item = m.itemsize
    s0, s1 = m.strides
    rows, cols = m.shape
    if (s1 == item or cols == 1) and s0 % item == 0 and s0 // item >= max(cols, 1):
        return _NO_TRANS, max(s0 // item, 1)
    if (s0 == item or rows == 1) and s1 % item == 0 and s1 // item >= max(rows, 1):
        return _TRANS, max(s1 // item, 1)
    return None


def gemm(alpha, a, b, beta, c):
    """c = alpha * a @ b + beta * c in place, by BLAS; True when done.

    a (m x k), b (k x n) and c (m x n) are 2-D arrays of one dtype, float32 or
    float64; c must be C-contiguous.  a and b may be transposed views of
    C-contiguous arrays or rows of a larger one.  Returns ``None``, without
    touching c, when no BLAS is available or a layout does not fit: compute
    it another way then.  As in BLAS, ``beta = 0`` ignores c's old values.
    """
    lib = _library()
    if lib is None or not (c.flags.c_contiguous and c.flags.writeable and c.flags.aligned):
        return None
    f = lib.functions.get(c.dtype)
    if f is None or a.dtype != c.dtype or b.dtype != c.dtype or not (a.flags.aligned and b.flags.aligned):
        return None
    (m, k), (k2, n) = a.shape, b.shape
    if c.shape != (m, n) or k2 != k:
        raise ValueError(f"gemm: shapes {a.shape} @ {b.shape} -> {c.shape} do not match")
    if m == 0 or n == 0:
        return True
    ta, tb = _operand(a), _operand(b)
    if ta is None or tb is None or max(m, n, k, ta[1], tb[1]) > lib.max_int:
        return None
    if np.may_share_memory(c, a) or np.may_share_memory(c, b):
        return None  # BLAS would read what it has already written
    f(_ROW_MAJOR, ta[0], tb[0], m, n, k, alpha, a.ctypes.data, ta[1], b.ctypes.data, tb[1],
      beta, c.ctypes.data, max(n, 1))
    return True

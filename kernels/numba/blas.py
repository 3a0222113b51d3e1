"""BLAS ``?gemm`` called from compiled code (no twin in ``fastnet.kernels.numpy``:
the reference multiplies with ``@``).

The compiled step calls the ``cblas_?gemm`` of the OpenBLAS that NumPy uses
(``fastnet.kernels._blas`` finds it), through its address, passed at run time
as an integer, as ``cpu.Leaves`` passes the kernels' addresses: code that holds
no address of this process can be cached on disk.  Of the three ways to reach
BLAS from numba (the issue's list), this one was chosen because:

* numba's own ``np.dot`` has no ``alpha`` and ``beta`` (the SGD step inside
  the product, the momentum's ``beta = mu``), copies non-contiguous operands
  such as ``x.T``, and needs SciPy at run time;
* SciPy's ``cython_blas`` gives addresses too, but of SciPy's OpenBLAS: a
  second BLAS with a thread pool of its own beside NumPy's (two pools on two
  cores oversubscribe them), and a dependency fastnet does not otherwise have;
* NumPy's OpenBLAS is already loaded in every process and its threads are
  the ones ``threadpoolctl`` limits.

Measured against the same products called from Python (``np.matmul`` and
``_blas.gemm``): the step's products take the same time; what is saved is
the Python around them (``benchmarks/jit_vs_numpy.py``).

OpenBLAS's integers are 32 or 64 bits wide by how it was built, known only at
run time (``wide``): both calls are compiled, and the step takes one.
"""

import ctypes

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from fastnet.kernels import _blas

from .cpu import DISABLED, jit

__all__ = ["address", "axpy", "axpy_address", "matmul"]

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def address(dtype):
    """(address of ``cblas_?gemm`` for ``dtype``, whether its integers are 64 bits),
    or None when NumPy's BLAS cannot be called directly (``_blas.available``)."""
    found = _blas.function(dtype)
    return None if found is None else (ctypes.cast(found[0], ctypes.c_void_p).value, found[1])


def axpy_address(dtype):
    """The address of ``cblas_?axpy`` for ``dtype`` in the library of ``address``
    (its integers as wide), or 0 when there is none."""
    found = _blas.axpy_function(dtype)
    return 0 if found is None else ctypes.cast(found, ctypes.c_void_p).value


def _cblas_call(bits):
    @intrinsic
    def call(typingctx, fn, ta, tb, m, n, k, alpha, a, b, beta, c):
        if not (isinstance(a, types.Array) and a.dtype in (types.float32, types.float64)
                and b == a and c == a):
            return None
        real = a.dtype

        def codegen(context, builder, sig, args):
            fn_, ta_, tb_, m_, n_, k_, alpha_, a_, b_, beta_, c_ = args
            ll_real = context.get_value_type(real)
            int_t, i32, ptr = ir.IntType(bits), ir.IntType(32), ll_real.as_pointer()
            fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, int_t, int_t, int_t, ll_real, ptr, int_t,
                                                   ptr, int_t, ll_real, ptr, int_t])
            fptr = builder.inttoptr(fn_, fnty.as_pointer())
            arrays = [context.make_array(a)(context, builder, value=v) for v in (a_, b_, c_)]
            # row-major leading dimensions: the stored rows' lengths (C-contiguous arrays)
            lds = [builder.extract_value(arr.shape, 1) for arr in arrays]

            def as_int(v):
                return builder.trunc(v, int_t) if bits < 64 else v

            def enum(v):
                return builder.trunc(v, i32)

            builder.call(fptr, [
                ir.Constant(i32, _ROW_MAJOR), enum(ta_), enum(tb_), as_int(m_), as_int(n_), as_int(k_),
                context.cast(builder, alpha_, sig.args[6], real), arrays[0].data, as_int(lds[0]),
                arrays[1].data, as_int(lds[1]), context.cast(builder, beta_, sig.args[9], real),
                arrays[2].data, as_int(lds[2])])
            return context.get_dummy_value()

        return types.void(fn, ta, tb, m, n, k, alpha, a, b, beta, c), codegen

    return call


_cblas32, _cblas64 = _cblas_call(32), _cblas_call(64)


def _axpy_call(bits):
    @intrinsic
    def call(typingctx, fn, n, alpha, x, y):
        if not (isinstance(x, types.Array) and x.dtype in (types.float32, types.float64) and y == x):
            return None
        real = x.dtype

        def codegen(context, builder, sig, args):
            fn_, n_, alpha_, x_, y_ = args
            ll_real = context.get_value_type(real)
            int_t, ptr = ir.IntType(bits), ll_real.as_pointer()
            fnty = ir.FunctionType(ir.VoidType(), [int_t, ll_real, ptr, int_t, ptr, int_t])
            fptr = builder.inttoptr(fn_, fnty.as_pointer())
            xs, ys = (context.make_array(x)(context, builder, value=v) for v in (x_, y_))
            unit = ir.Constant(int_t, 1)
            count = builder.trunc(n_, int_t) if bits < 64 else n_
            builder.call(fptr, [count, context.cast(builder, alpha_, sig.args[2], real), xs.data, unit,
                                ys.data, unit])
            return context.get_dummy_value()

        return types.void(fn, n, alpha, x, y), codegen

    return call


_axpy32, _axpy64 = _axpy_call(32), _axpy_call(64)


def _matmul_python(fn, wide, alpha, a, trans_a, b, trans_b, beta, c):
    """``matmul`` under NUMBA_DISABLE_JIT: the same BLAS through ctypes (``_blas``;
    ``fn`` not used), or NumPy's products where that cannot run."""
    a, b = (a.T if trans_a else a), (b.T if trans_b else b)
    if _blas.gemm(float(alpha), a, b, float(beta), c):
        return
    product = a @ b
    if beta == 0:
        c[...] = alpha * product
    else:
        c *= beta
        c += alpha * product


def _axpy_python(fn, wide, alpha, x, y):
    """``axpy`` under NUMBA_DISABLE_JIT: the same BLAS through ctypes (``_blas``;
    ``fn`` not used), or NumPy where that cannot run."""
    if not _blas.axpy(float(alpha), x, y):
        y += y.dtype.type(alpha) * x


@jit(inline="always")
def _axpy(fn, wide, alpha, x, y):
    """y += alpha x over every element, by BLAS's ``?axpy`` at address ``fn``
    (``axpy_address``; ``wide``: its integers are 64 bits); x, y C-contiguous
    arrays of one dtype and size, not overlapping (not checked: the caller's
    plan did).  OpenBLAS shares a large one among its threads: right after a
    two-thread ``?gemm`` into x, ``w -= lr v`` this way took 17 us more than
    the product where one compiled pass took 80 us more (784 x 256 float32,
    Zen 3): the pass moved the lines both cores had written to one."""
    if wide:
        _axpy64(fn, np.intp(y.size), alpha, x, y)
    else:
        _axpy32(fn, np.intp(y.size), alpha, x, y)


@jit
def _matmul(fn, wide, alpha, a, trans_a, b, trans_b, beta, c):
    """c = alpha op(a) @ op(b) + beta c, by BLAS (op: transposed when its flag is
    set); a, b, c C-contiguous 2-D arrays of one dtype, c not overlapping a or b,
    their shapes matching (not checked: the caller's plan did); ``beta = 0``
    ignores c's old values, as BLAS does."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    ta, tb = np.intp(_TRANS if trans_a else _NO_TRANS), np.intp(_TRANS if trans_b else _NO_TRANS)
    if wide:
        _cblas64(fn, ta, tb, np.intp(m), np.intp(n), np.intp(k), alpha, a, b, beta, c)
    else:
        _cblas32(fn, ta, tb, np.intp(m), np.intp(n), np.intp(k), alpha, a, b, beta, c)


#: ``matmul(fn, wide, alpha, a, trans_a, b, trans_b, beta, c)``, with ``(fn, wide) = address(dtype)``.
matmul = _matmul_python if DISABLED else _matmul
#: ``axpy(fn, wide, alpha, x, y)``: y += alpha x, with ``fn = axpy_address(dtype)``.
axpy = _axpy_python if DISABLED else _axpy

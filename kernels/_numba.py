"""The JIT kernels: the names and signatures of ``_numpy``, compiled with Numba.

This is the only module of fastnet that imports numba; ``fastnet.backend``
imports it when the numba backend is first asked for.

How the work is split (measured; see ``benchmarks/jit_vs_numpy.py``):

* Large batches are GEMM-bound.  The three matrix products of a dense layer
  stay on NumPy's BLAS, written into the caller's buffers (``np.matmul(...,
  out=)``), and everything else is fused into single compiled passes: bias and
  activation after ``x @ w``; activation derivative, ``dy`` and the bias
  gradient's column sum before ``x.T @ dz`` and ``dz @ w.T``.
* At small batches OpenBLAS is slow (see the thresholds below): there compiled
  loops walk the weight rows once (rank-B updates of ``dw``, dot products for
  ``dx``, register tiles for ``x @ w``).

No kernel starts threads of its own (no ``prange``): the only thread pool is
BLAS's, so the two can never oversubscribe the cores.  Scalars are cast to the
arrays' dtype inside the kernels and constants are typed the same way, so
float32 stays float32; the loss is accumulated in float64 and returned as the
arrays' dtype.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic

from . import _numpy as _ref
from ._blas import gemm
from ._numpy import (
    _GELU_C,
    _GELU_CLIP,
    _GELU_K,
    ELU,
    IDENTITY,
    LEAKY_RELU,
    MSE,
    RELU,
    SIGMOID,
    SOFTMAX_XENT,
    SOFTPLUS,
    TANH,
)

_jit = njit(cache=True, nogil=True)


# -- vector width ---------------------------------------------------------------------
# LLVM's models of Intel's AVX-512 server cores prefer 256-bit vectors (older
# ones lower their clock for 512-bit code), so the loops below would use ymm
# registers.  On the cores listed here, where 512-bit code runs at full clock,
# the kernels that call ``_wide_vectors()`` ask LLVM for zmm instead: measured
# 1.05-1.2x faster for the fused step (784-256-256-10 MLP, B = 1-16, Emerald
# Rapids, side by side).  The choice depends only on the CPU name, which is in
# numba's cache key, so a cached kernel never carries another CPU's choice.
_WIDE_VECTOR_CPUS = ("sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d")


def _host_cpu_name():
    """The CPU numba compiles for, chosen as numba chooses it."""
    import llvmlite.binding as llvm

    return llvm.get_host_cpu_name() if numba_config.CPU_NAME is None else numba_config.CPU_NAME


WIDE_VECTORS = _host_cpu_name() in _WIDE_VECTOR_CPUS


def _no_hint():
    """Under NUMBA_DISABLE_JIT the kernels run as Python: there is nothing to compile."""


@intrinsic
def _wide_vectors(typingctx):
    """Let LLVM use 512-bit vectors in the calling kernel (when ``WIDE_VECTORS``)."""

    def codegen(context, builder, signature, args):
        if WIDE_VECTORS:
            # llvmlite's FunctionAttributes only accepts the attributes it knows
            # by name; LLVM's string attributes are added as the raw text it prints.
            attrs = builder.function.attributes
            if isinstance(attrs, set):  # else llvmlite changed: keep LLVM's choice
                set.add(attrs, '"prefer-vector-width"="512"')
                set.add(attrs, '"min-legal-vector-width"="512"')
        return context.get_dummy_value()

    return types.void(), codegen


if numba_config.DISABLE_JIT:
    _wide_vectors = _no_hint  # noqa: F811


# -- register tiles -----------------------------------------------------------------
# The small-batch products of the fused step (x @ w, and x.T @ g for the update)
# as tiles of R rows by V vectors of the output that stay in registers for the
# whole reduction.  Numba's own loops cannot do this: they keep such a tile in
# memory (nothing tells LLVM that the output does not alias the inputs), and numba
# leaves LLVM's SLP vectoriser off.  So the tile's loop is written in LLVM IR here.
# Measured on a 2-core Zen 3, 784 x 256 and B = 16: 4 x 3 ymm tiles 29-31 GFMA/s
# against 15-17 for the row-sweeping loops they replace (OpenBLAS: 31-42).
_VEC_BYTES = 64 if WIDE_VECTORS else 32


def _lanes(itemsize):
    return _VEC_BYTES // itemsize


@intrinsic(prefer_literal=True)
def _tile_fma(typingctx, R, V, c, c0, ldc, a, a0, a_rs, a_ks, b, b0, ldb, n_k, alpha):
    """c[c0 + r ldc + j] += alpha * sum over k < n_k of a[a0 + r a_rs + k a_ks] * b[b0 + k ldb + j]
    for r < R and j < V * lanes, on the flat elements of C-contiguous arrays of
    one dtype (R and V literal; no bounds checks: the callers' loops keep inside)."""
    arrays = (c, a, b)
    if not (isinstance(R, types.IntegerLiteral) and isinstance(V, types.IntegerLiteral)
            and all(isinstance(t, types.Array) and t.layout == "C" and t.dtype == c.dtype
                    for t in arrays)):
        return None
    n_r, n_v, dt, i = R.literal_value, V.literal_value, c.dtype, types.intp
    sig = types.void(R, V, c, i, i, a, i, i, i, b, i, i, i, dt)

    def codegen(context, builder, signature, args):
        _, _, c_, c0_, ldc_, a_, a0_, a_rs_, a_ks_, b_, b0_, ldb_, n_k_, alpha_ = args
        T = context.get_value_type(dt)
        size = context.get_abi_sizeof(T)
        lanes = _lanes(size)
        vec = ir.VectorType(T, lanes)
        cd, ad, bd = (context.make_array(t)(context, builder, value=v).data
                      for t, v in zip(arrays, (c_, a_, b_), strict=True))

        def const(n):
            return ir.Constant(cgutils.intp_t, n)

        def at(base, off):
            return builder.gep(base, [off], source_etype=T)

        def vload(base, off):
            return builder.load(builder.bitcast(at(base, off), vec.as_pointer()), align=size, typ=vec)

        i32 = ir.IntType(32)
        zeros = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)

        def splat(s):
            one = builder.insert_element(ir.Constant(vec, ir.Undefined), s, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, one, zeros)

        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec] * 3),
            f"llvm.fmuladd.v{lanes}f{8 * size}")
        acc = [[cgutils.alloca_once(builder, vec) for _ in range(n_v)] for _ in range(n_r)]
        for row in acc:
            for cell in row:
                builder.store(ir.Constant(vec, None), cell)
        with cgutils.for_range(builder, n_k_) as loop:
            k = loop.index
            b_k = builder.add(b0_, builder.mul(k, ldb_))
            bv = [vload(bd, builder.add(b_k, const(v * lanes))) for v in range(n_v)]
            a_k = builder.add(a0_, builder.mul(k, a_ks_))
            for r in range(n_r):
                s = splat(builder.load(at(ad, builder.add(a_k, builder.mul(a_rs_, const(r)))), typ=T))
                for v in range(n_v):
                    builder.store(builder.call(fmuladd, [s, bv[v], builder.load(acc[r][v], typ=vec)]),
                                  acc[r][v])
        al = splat(alpha_)
        for r in range(n_r):
            c_r = builder.add(c0_, builder.mul(ldc_, const(r)))
            for v in range(n_v):
                p = builder.bitcast(at(cd, builder.add(c_r, const(v * lanes))), vec.as_pointer())
                old = builder.load(p, align=size, typ=vec)
                builder.store(builder.call(fmuladd, [al, builder.load(acc[r][v], typ=vec), old]), p,
                              align=size)
        return context.get_dummy_value()

    return sig, codegen


def _tile_fma_python(R, V, c, c0, ldc, a, a0, a_rs, a_ks, b, b0, ldb, n_k, alpha):
    """``_tile_fma`` in NumPy, for kernels run as Python (NUMBA_DISABLE_JIT): on
    strided views (no copies, so a train step still allocates no workspace-sized
    arrays), with the bounds the compiled tile trusts its callers to keep checked."""
    width, item = V * _lanes(c.itemsize), c.itemsize
    cf, af, bf = c.reshape(-1), a.reshape(-1), b.reshape(-1)
    last_a = a0 + (R - 1) * a_rs + (n_k - 1) * a_ks if n_k else a0
    if not (0 <= c0 and c0 + (R - 1) * ldc + width <= cf.size and 0 <= a0 and last_a < af.size
            and 0 <= b0 and b0 + max(n_k - 1, 0) * ldb + width <= bf.size):
        raise IndexError("register tile out of bounds")
    view = np.lib.stride_tricks.as_strided
    b_t = view(bf[b0:], (n_k, width), (ldb * item, item), writeable=False)
    with np.errstate(all="ignore"):
        for r in range(R):
            a_r = view(af[a0 + r * a_rs:], (n_k,), (a_ks * item,), writeable=False)
            cf[c0 + r * ldc:c0 + r * ldc + width] += c.dtype.type(alpha) * (a_r @ b_t)


if numba_config.DISABLE_JIT:
    _tile_fma = _tile_fma_python  # noqa: F811


# -- scalar activations -----------------------------------------------------------
# A Python literal in a float32 expression would make it float64 in Numba, so
# the constants travel as a tuple typed like the arrays: ``_consts(a)``.
@_jit
def _consts(a):
    """(0, 1, GELU clip, GELU c, GELU k, 3) in the dtype of array ``a``."""
    T = a.dtype.type
    return (T(0), T(1), T(_GELU_CLIP), T(_GELU_C), T(_GELU_K), T(3))


@_jit
def _sigmoid(v, K):
    zero, one = K[0], K[1]
    if v >= zero:
        return one / (one + math.exp(-v))
    e = math.exp(v)
    return e / (one + e)


@_jit
def _f(kind, alpha, v, K):
    """f(v) for one value; alpha, v and the constants K share the arrays' dtype."""
    zero, one, clip, c, k, _ = K
    if kind == IDENTITY:
        return v
    if kind == SIGMOID:
        return _sigmoid(v, K)
    if kind == TANH:
        return math.tanh(v)
    if kind == RELU:
        return zero if v <= zero else v  # NaN passes through, as np.maximum does
    if kind == LEAKY_RELU:
        return v if v > zero else alpha * v
    if kind == ELU:
        return v if v > zero else alpha * math.expm1(v)
    if kind == SOFTPLUS:
        return max(v, zero) + math.log1p(math.exp(-abs(v)))
    # GELU, tanh form, as a * sigmoid(2u): see the reference for why
    vc = min(max(v, -clip), clip)
    u2 = (c + c) * (vc + k * vc * vc * vc)
    return (v if v >= zero else vc) * _sigmoid(u2, K)


@_jit
def _df(kind, alpha, v, y, K):
    """f'(v) for one value, given y = f(v) (read by sigmoid and tanh)."""
    zero, one, clip, c, k, three = K
    if kind == IDENTITY:
        return one
    if kind == SIGMOID:
        return y * (one - y)
    if kind == TANH:
        return one - y * y
    if kind == RELU:
        return one if v > zero else zero
    if kind == LEAKY_RELU:
        return one if v > zero else alpha
    if kind == ELU:
        return one if v > zero else alpha * math.exp(v)
    if kind == SOFTPLUS:
        return _sigmoid(v, K)
    vc = min(max(v, -clip), clip)
    u2 = (c + c) * (vc + k * vc * vc * vc)
    s = _sigmoid(u2, K)
    return s + vc * (s * _sigmoid(-u2, K)) * ((c + c) * (one + three * k * vc * vc))


# -- elementwise kernels -------------------------------------------------------------
# The row helpers switch on ``kind`` once per row and give the cheap activations
# loops of their own, which LLVM vectorises; the others call the scalar code.
@_jit
def _act_row(kind, al, a, y, K):
    """y = f(a) for one row."""
    zero = K[0]
    if kind == IDENTITY:
        for j in range(a.size):
            y[j] = a[j]
    elif kind == RELU:
        for j in range(a.size):
            v = a[j]
            y[j] = zero if v <= zero else v
    elif kind == LEAKY_RELU:
        for j in range(a.size):
            v = a[j]
            y[j] = v if v > zero else al * v
    else:
        for j in range(a.size):
            y[j] = _f(kind, al, a[j], K)


@_jit
def _grad_row(kind, al, a, y, dy, dz, K):
    """dz = dy * f'(a) for one row (y = f(a))."""
    zero, one = K[0], K[1]
    if kind == IDENTITY:
        for j in range(a.size):
            dz[j] = dy[j]
    elif kind == RELU:
        for j in range(a.size):
            dz[j] = dy[j] if a[j] > zero else zero
    elif kind == LEAKY_RELU:
        for j in range(a.size):
            dz[j] = dy[j] if a[j] > zero else al * dy[j]
    elif kind == SIGMOID:
        for j in range(a.size):
            dz[j] = dy[j] * (y[j] * (one - y[j]))
    elif kind == TANH:
        for j in range(a.size):
            dz[j] = dy[j] * (one - y[j] * y[j])
    else:
        for j in range(a.size):
            dz[j] = dy[j] * _df(kind, al, a[j], y[j], K)


# Numba cannot vectorise libm's transcendental functions (that needs SVML, which
# PyPI's llvmlite lacks), so a compiled pass of sigmoid, tanh, elu or softplus
# runs one scalar call per element: measured up to 35 times slower than NumPy's
# SIMD ufuncs (tanh at 2048 x 512; sigmoid 2x at 16 x 512; elu's gradient 1.3x).
# For those the JIT path composes the reference's ufunc code (which allocates
# temporaries) instead.
_UFUNC_FORWARD = (SIGMOID, TANH, ELU, SOFTPLUS)
_UFUNC_GRAD = (ELU,)


def activation_forward(kind, alpha, a, y):
    """Same contract as ``_numpy.activation_forward``."""
    if kind in _UFUNC_FORWARD:
        return _ref.activation_forward(kind, alpha, a, y)
    return _activation_forward(kind, alpha, a, y)


@_jit
def _activation_forward(kind, alpha, a, y):
    _act_row(kind, a.dtype.type(alpha), a.reshape(-1), y.reshape(-1), _consts(a))
    return y


@_jit
def activation_derivative(kind, alpha, a, out):
    """Same contract as ``_numpy.activation_derivative``."""
    al, K = a.dtype.type(alpha), _consts(a)
    af = a.reshape(-1)
    of = out.reshape(-1)
    for i in range(af.size):
        v = af[i]
        of[i] = _df(kind, al, v, _f(kind, al, v, K), K)
    return out


def activation_grad(kind, alpha, a, y, dy, dz):
    """Same contract as ``_numpy.activation_grad``."""
    if kind in _UFUNC_GRAD:
        return _ref.activation_grad(kind, alpha, a, y, dy, dz)
    return _activation_grad(kind, alpha, a, y, dy, dz)


@_jit
def _activation_grad(kind, alpha, a, y, dy, dz):
    _grad_row(kind, a.dtype.type(alpha), a.reshape(-1), y.reshape(-1), dy.reshape(-1),
              dz.reshape(-1), _consts(a))
    return dz


def _forward_elementwise(b, kind, alpha, a, y):
    """a += b, y = f(a): one compiled pass, or NumPy's ufuncs for _UFUNC_FORWARD."""
    if kind in _UFUNC_FORWARD:
        np.add(a, b, out=a)
        _ref.activation_forward(kind, alpha, a, y)
    else:
        _bias_activation(b, kind, alpha, a, y)


def _backward_elementwise(kind, alpha, a, y, dy, dz, db):
    """dz = dy * f'(a), db = mean of dz: one compiled pass, or ufuncs for _UFUNC_GRAD."""
    if kind in _UFUNC_GRAD:
        _ref.activation_grad(kind, alpha, a, y, dy, dz)
        np.sum(dz, axis=0, keepdims=True, out=db)
        np.multiply(db, db.dtype.type(1.0 / a.shape[0]), out=db)
    else:
        _grad_and_bias_grad(kind, alpha, a, y, dy, dz, db)


@_jit
def _bias_activation(b, kind, alpha, a, y):
    """a += b (row-broadcast), y = f(a): one pass, each row finished while in cache."""
    al, K = a.dtype.type(alpha), _consts(a)
    bias = b[0]
    for r in range(a.shape[0]):
        row = a[r]
        for j in range(row.size):
            row[j] += bias[j]
        _act_row(kind, al, row, y[r], K)


@_jit
def _grad_and_bias_grad(kind, alpha, a, y, dy, dz, db):
    """dz = dy * f'(a) and db = mean of dz over rows, in one pass."""
    al, K = a.dtype.type(alpha), _consts(a)
    n_rows = a.shape[0]
    acc = db[0]
    acc[:] = 0
    for r in range(n_rows):
        g = dz[r]
        _grad_row(kind, al, a[r], y[r], dy[r], g, K)
        for j in range(g.size):
            acc[j] += g[j]
    inv = a.dtype.type(1) / a.dtype.type(n_rows)
    for j in range(acc.size):
        acc[j] *= inv


# -- small-batch loops ---------------------------------------------------------------
# Multiply-adds may contract into FMAs here, and the dot products may reassociate
# (several accumulators, vectorised): both change rounding by a few ulp, within
# the agreement tolerances, and neither changes NaN or inf semantics.
_jit_fma = njit(cache=True, nogil=True, fastmath={"contract"})
_jit_dot = njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})


_inline = njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")


@_inline
def _add_weight_grad_row(x, dz, i, inv, row):
    """row += (x.T @ dz)[i] * inv: four rows of dz per sweep over ``row``
    (a quarter of the stores of one rank-1 update at a time)."""
    n_rows = x.shape[0]
    r = 0
    while r + 4 <= n_rows:
        x0, x1, x2, x3 = x[r, i] * inv, x[r + 1, i] * inv, x[r + 2, i] * inv, x[r + 3, i] * inv
        d0, d1, d2, d3 = dz[r], dz[r + 1], dz[r + 2], dz[r + 3]
        for j in range(row.size):
            row[j] += x0 * d0[j] + x1 * d1[j] + x2 * d2[j] + x3 * d3[j]
        r += 4
    while r < n_rows:
        xr, dr = x[r, i] * inv, dz[r]
        for j in range(row.size):
            row[j] += xr * dr[j]
        r += 1


@_jit_fma
def _weight_grad_small(x, dz, dw):
    """dw = x.T @ dz / B, each row of dw written once."""
    _wide_vectors()
    inv = x.dtype.type(1) / x.dtype.type(x.shape[0])
    for i in range(x.shape[1]):
        row = dw[i]
        for j in range(row.size):
            row[j] = 0
        _add_weight_grad_row(x, dz, i, inv, row)


@_jit_dot
def _input_grad_small(dz, w, dx):
    """dx[r, i] = dz[r] . w[i]: contiguous dot products, each row of w read once;
    two rows of w by four rows of dz per sweep, eight sums at a time (measured
    1.25-1.55x faster than one row of w per sweep at 256 x 256, 512 x 512 and
    784 x 256, B = 4-16, Zen 3: fewer loads per multiply-add)."""
    _wide_vectors()
    n_rows, n = dz.shape
    n_in = w.shape[0]
    zero = dz.dtype.type(0)
    for i in range(0, n_in, 2):
        pair = i + 1 < n_in
        wi = w[i]
        wk = w[i + 1] if pair else wi  # an odd last row is summed twice, stored once
        r = 0
        while r + 4 <= n_rows:
            d0, d1, d2, d3 = dz[r], dz[r + 1], dz[r + 2], dz[r + 3]
            s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = zero
            for j in range(n):
                u, v = wi[j], wk[j]
                s0 += d0[j] * u
                s1 += d1[j] * u
                s2 += d2[j] * u
                s3 += d3[j] * u
                t0 += d0[j] * v
                t1 += d1[j] * v
                t2 += d2[j] * v
                t3 += d3[j] * v
            dx[r, i], dx[r + 1, i], dx[r + 2, i], dx[r + 3, i] = s0, s1, s2, s3
            if pair:
                dx[r, i + 1], dx[r + 1, i + 1], dx[r + 2, i + 1], dx[r + 3, i + 1] = t0, t1, t2, t3
            r += 4
        while r < n_rows:
            dr = dz[r]
            s0 = t0 = zero
            for j in range(n):
                s0 += dr[j] * wi[j]
                t0 += dr[j] * wk[j]
            dx[r, i] = s0
            if pair:
                dx[r, i + 1] = t0
            r += 1


# -- dense layer: dispatch by batch size -----------------------------------------------
# Where our loops beat OpenBLAS depends on the machine (its L2 and OpenBLAS's
# kernels for it), so there are two sets of tables, each measured on a 2-core
# machine with ``python benchmarks/kernel_thresholds.py N_IN N_OUT``, float32.
# Re-measure them there when the machine or OpenBLAS changes.
#
# Intel's Sapphire, Emerald and Granite Rapids cores (``WIDE_VECTORS``; measured
# on Emerald Rapids, 2 MiB L2 per core, with the loops' 512-bit vectors).
# OpenBLAS's x.T @ dz for one row (an outer product) costs 300-3000 us where
# writing dw takes 20-300 us.  For more rows it depends on the weights' size:
# * below 1 MiB (256 x 256, 784 x 256) the loops win at 2 rows (1.5x), and
#   from 4 rows on the two are level or BLAS wins;
# * 1-2 MiB, within a core's L2 (512 x 512, 640 x 640): the loops win up to
#   12 rows, by 1.3-2x;
# * 2-4 MiB (896 x 896): up to 4 rows (265 against 422 us at B = 4);
# * 4 MiB (1024 x 1024): up to 8 rows (412 against 918 us at B = 8).
# dz @ w.T for 2 to 12 rows costs 1.1-2.5x our dot products below 2 MiB, and
# for 2 to 8 rows from there on.  x @ w stays on BLAS (measured before the
# register tiles; not re-measured there).
#
# All other cores, older AVX-512 Xeons included (measured on Zen 3, 512 KiB L2
# per core; 784 x 256, 512 x 512, 1024 x 1024).  OpenBLAS is slow for 2-7 rows
# (at 1024 x 1024 x @ w took 64 us for one row, 295-530 us for 2-6 and 245 for
# 8).  Our loops win x @ w and dz @ w.T for 2-6 rows (1.3-3x), x.T @ dz up to
# 4 rows (1.1-2.2x; level at 6), at every size; from 8 rows on BLAS wins or ties.
#: (weights bytes below, largest batch) pairs, in order: x.T @ dz by loops up to that batch.
DW_LOOPS_MAX_BATCH = ((1 << 20, 2), (2 << 20, 12), (4 << 20, 4), (math.inf, 8)) if WIDE_VECTORS \
    else ((math.inf, 4),)
#: dz @ w.T (and x @ w) by loops for batches from DX_LOOPS_MIN_BATCH (FWD_...) up
#: to the batch paired with the first weights-bytes limit above the weights' size.
DX_LOOPS_MIN_BATCH = 2
DX_LOOPS_MAX_BATCH = ((2 << 20, 12), (math.inf, 8)) if WIDE_VECTORS else ((math.inf, 6),)
FWD_LOOPS_MIN_BATCH = 2
FWD_LOOPS_MAX_BATCH = ((math.inf, 1),) if WIDE_VECTORS else ((math.inf, 6),)
#: x.T @ dz by register tiles (``_weight_grad_tiled``) for batches above the loops'
#: up to this, on non-``WIDE_VECTORS`` machines: where the weights fit a core's L2
#: with room to spare.  Measured on Zen 3, a whole layer forward + backward (dx
#: included) against dw by BLAS, side by side, three runs: 128 x 128 1.23-1.64x
#: faster at B = 5-32, 256 x 256 1.08-1.37x at 5-16 and 0.98-1.04x at 32; with
#: larger weights it lost (784 x 256 0.78-1.07x, 512 x 512 0.91-1.08x, 1024 x 1024
#: 0.62-0.94x at B = 5-32), so they keep BLAS.  Per product (``kernel_thresholds.py``)
#: OpenBLAS's x.T @ dz took 1.2-3.7x the tiles' time at 12-16 rows of 128 x 128 to
#: 256 x 256, but there its threads were cold between calls.
DW_TILES_MAX_BATCH = ((math.inf, 0),) if WIDE_VECTORS else ((512 << 10, 32), (math.inf, 0))


def _loops_up_to(table, w_bytes):
    return next(batch for limit, batch in table if w_bytes < limit)


def _dw_by_loops(batch, w_bytes):
    return batch <= _loops_up_to(DW_LOOPS_MAX_BATCH, w_bytes)


def _tiles_take(out, *arrays):
    """Whether the register tiles take these arrays: C-contiguous, all of out's dtype."""
    return all(t.flags.c_contiguous and t.dtype == out.dtype for t in (out, *arrays))


def _dw_by_tiles(x, dz, dw):
    """Whether x.T @ dz goes to ``_weight_grad_tiled``: its batch sizes, and arrays
    it takes."""
    return x.shape[0] <= _loops_up_to(DW_TILES_MAX_BATCH, dw.nbytes) and _tiles_take(dw, x, dz)


def _dx_by_loops(batch, w_bytes):
    return DX_LOOPS_MIN_BATCH <= batch <= _loops_up_to(DX_LOOPS_MAX_BATCH, w_bytes)


def _fwd_by_loops(x, w, b, a, y):
    """x @ w (with bias and activation) by ``_forward_loops``: for its batch
    sizes, and arrays it takes (C-contiguous, one dtype)."""
    return (FWD_LOOPS_MIN_BATCH <= x.shape[0] <= _loops_up_to(FWD_LOOPS_MAX_BATCH, w.nbytes)
            and _tiles_take(a, x, w, b, y))


def dense_forward(x, w, b, kind, alpha, a, y):
    """Same contract as ``_numpy.dense_forward``."""
    if _fwd_by_loops(x, w, b, a, y):
        _forward_loops(x, w, b, kind, a.dtype.type(alpha), _consts(a), a, y)
        return y
    np.matmul(x, w, out=a)
    _forward_elementwise(b, kind, alpha, a, y)
    return y


def dense_backward(x, a, y, dy, kind, alpha, dz, dw, db):
    """Same contract as ``_numpy.dense_backward``."""
    _backward_elementwise(kind, alpha, a, y, dy, dz, db)
    return _weight_grad(x, dz, dw)


def _weight_grad(x, dz, dw):
    """dw = x.T @ dz / B, by compiled loops or BLAS as measured best."""
    if _dw_by_loops(x.shape[0], dw.nbytes):
        _weight_grad_small(x, dz, dw)
        return dw
    if _dw_by_tiles(x, dz, dw):
        _weight_grad_tiled(x, dz, dw)
        return dw
    return _blas_weight_grad(x, dz, dw)


def _blas_weight_grad(x, dz, dw):
    """dw = x.T @ dz / B by BLAS, which applies the 1/B itself when called directly."""
    batch = x.shape[0]
    if not gemm(1.0 / batch, x.T, dz, 0.0, dw):
        np.matmul(x.T, dz, out=dw)  # no direct BLAS here: scale in a second pass
        np.multiply(dw, dw.dtype.type(1.0 / batch), out=dw)
    return dw


def input_grad(dz, w, dx):
    """Same contract as ``_numpy.input_grad``."""
    if _dx_by_loops(dz.shape[0], w.nbytes):
        _input_grad_small(dz, w, dx)
    else:
        np.matmul(dz, w.T, out=dx)
    return dx


def dense_backward_sgd(x, a, y, dy, kind, alpha, dz, dw, db, dx, w, lr):
    """Same contract as ``_numpy.dense_backward_sgd``; dw is left untouched.

    BLAS applies the step inside the weight-gradient product, ``w = w - (lr /
    B) x.T @ dz``, so no dw is written and read again (measured 1.02-1.24x
    faster train steps than gradients-then-``sgd_step`` for the
    784-256-256-10 MLP at B = 17-4096).  Without a direct BLAS (see ``_blas``)
    this is that composition, with dw as the gradient's buffer.  (Weight decay
    is left out on purpose: as BLAS's ``beta = 1 - lr wd`` it would be rounded
    to a multiple of 2^-24 in float32, a decay off by 19 % at lr wd = 1e-7.)
    """
    _backward_elementwise(kind, alpha, a, y, dy, dz, db)
    if dx is not None:
        input_grad(dz, w, dx)
    if not gemm(-lr / x.shape[0], x.T, dz, 1.0, w):
        _weight_grad(x, dz, dw)
        sgd_step(w, dw, w[:0], lr, 0.0, 0.0, False)
    return dx


@_jit_dot
def check_and_one_hot(x, labels, t):
    """Same contract as ``_numpy.check_and_one_hot``, in one compiled pass."""
    xf = x.reshape(-1)
    inf = x.dtype.type(np.inf)
    finite = 0
    for i in range(xf.size):  # a count of comparisons vectorises, and warns of nothing as Python
        finite += abs(xf[i]) < inf  # False for NaN and for +-inf
    if finite != xf.size:
        return False
    n_classes = t.shape[1]
    for r in range(labels.size):
        if labels[r] < 0 or labels[r] >= n_classes:
            return False
    zero, one = t.dtype.type(0), t.dtype.type(1)
    for r in range(labels.size):
        t[r, :] = zero
        t[r, labels[r]] = one
    return True


# -- losses -----------------------------------------------------------------------------
@_jit
def softmax(z, out):
    """Same contract as ``_numpy.softmax``."""
    n_rows, c = z.shape
    for r in range(n_rows):
        m = z[r, 0]
        for j in range(1, c):
            m = max(m, z[r, j])
        s = z.dtype.type(0)
        for j in range(c):
            e = math.exp(z[r, j] - m)
            out[r, j] = e
            s += e
        for j in range(c):
            out[r, j] /= s
    return out


@_jit_dot
def loss_value(kind, z, t):
    """Same contract as ``_numpy.loss_value`` (accumulated in float64, in any order)."""
    n_rows, c = z.shape
    total = 0.0
    if kind == SOFTMAX_XENT:
        for r in range(n_rows):
            m = z[r, 0]
            for j in range(1, c):
                m = max(m, z[r, j])
            s = 0.0
            dot = 0.0
            for j in range(c):
                s += math.exp(float(z[r, j] - m))
                dot += float(z[r, j]) * float(t[r, j])
            total += float(m) + math.log(s) - dot
    elif kind == MSE:
        for r in range(n_rows):
            for j in range(c):
                d = float(z[r, j]) - float(t[r, j])
                total += d * d
        total /= c
    else:
        for r in range(n_rows):
            for j in range(c):
                v = float(z[r, j])
                total += max(v, 0.0) + math.log1p(math.exp(-abs(v))) - float(t[r, j]) * v
        total /= c
    return z.dtype.type(total / n_rows)


@_jit
def loss_grad(kind, z, t, out):
    """Same contract as ``_numpy.loss_grad``."""
    n_rows, c = z.shape
    if kind == SOFTMAX_XENT:
        softmax(z, out)
        for r in range(n_rows):
            for j in range(c):
                out[r, j] -= t[r, j]
        return out
    cc = z.dtype.type(c)
    K = _consts(z)
    if kind == MSE:
        scale = z.dtype.type(2) / cc
        for r in range(n_rows):
            for j in range(c):
                out[r, j] = scale * (z[r, j] - t[r, j])
    else:
        for r in range(n_rows):
            for j in range(c):
                out[r, j] = (_sigmoid(z[r, j], K) - t[r, j]) / cc
    return out


# -- optimizers ---------------------------------------------------------------------------
_TINY32 = float(np.finfo(np.float32).tiny)
_TINY64 = float(np.finfo(np.float64).tiny)


@_jit
def _tiny(a):
    """The smallest normal number of a's dtype (float32 or float64)."""
    return a.dtype.type(_TINY32) if a.itemsize == 4 else a.dtype.type(_TINY64)


@_jit
def flush_subnormal(a):
    """Same contract as ``_numpy.flush_subnormal``."""
    tiny, zero = _tiny(a), a.dtype.type(0)
    af = a.reshape(-1)
    for i in range(af.size):
        if abs(af[i]) < tiny:  # False for NaN: NaN stays
            af[i] = zero
    return a


@_inline
def _momentum_rule(wi, vr, j, dj, lr, mu, nesterov, tiny, zero):
    """The SGD momentum rule for element j of a row, given its gradient dj (weight
    decay included): the velocity, flushed to zero when subnormal, then the step."""
    vj = mu * vr[j] + dj
    if abs(vj) < tiny:  # flush_subnormal, fused
        vj = zero
    vr[j] = vj
    wi[j] -= lr * (dj + mu * vj if nesterov else vj)


@_inline
def _sgd_row(p, g, v, lr, mu, wd, nesterov, tiny):
    """The SGD rule of ``_numpy.sgd_step`` on 1-D arrays of one dtype, scalars
    already in that dtype; v is read and written only when mu is not 0."""
    if mu == 0:
        for i in range(p.size):
            p[i] -= lr * (g[i] + wd * p[i])
        return
    zero = p.dtype.type(0)
    for i in range(p.size):
        _momentum_rule(p, v, i, g[i] + wd * p[i], lr, mu, nesterov, tiny, zero)


@_jit
def sgd_step(p, g, v, lr, momentum, weight_decay, nesterov):
    """Same contract as ``_numpy.sgd_step``."""
    T = p.dtype.type
    _sgd_row(p.reshape(-1), g.reshape(-1), v.reshape(-1), T(lr), T(momentum), T(weight_decay),
             nesterov, _tiny(p))
    return p


@_jit
def adam_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t):
    """Same contract as ``_numpy.adam_step``."""
    T = p.dtype.type
    b1, b2, eps_, wd, lr_ = T(beta1), T(beta2), T(eps), T(weight_decay), T(lr)
    one, zero, tiny = T(1), T(0), _tiny(p)
    c1 = T(1 - beta1**t)  # bias corrections, as the reference divides by them
    c2 = T(1 - beta2**t)
    pf, gf, mf, vf = p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1)
    for i in range(pf.size):
        d = gf[i] + wd * pf[i]
        mi = b1 * mf[i] + (one - b1) * d
        vi = b2 * vf[i] + (one - b2) * d * d
        if abs(mi) < tiny:
            mi = zero
        if abs(vi) < tiny:
            vi = zero
        mf[i] = mi
        vf[i] = vi
        pf[i] -= lr_ * (mi / c1) / (math.sqrt(vi / c2) + eps_)
    return p


@_jit
def running_mean(acc, g, frac):
    """Same contract as ``_numpy.running_mean``."""
    fr = acc.dtype.type(frac)
    af, gf = acc.reshape(-1), g.reshape(-1)
    for i in range(af.size):
        af[i] += fr * (gf[i] - af[i])
    return acc


# -- the fused small-batch training step ---------------------------------------------------
@_inline
def _dot8(p, i, w0, w1, w2, w3, w4, w5, w6, w7, j):
    """sum over k < 8 of p[i + k] * wk[j], in two groups of four."""
    return ((p[i] * w0[j] + p[i + 1] * w1[j] + p[i + 2] * w2[j] + p[i + 3] * w3[j])
            + (p[i + 4] * w4[j] + p[i + 5] * w5[j] + p[i + 6] * w6[j] + p[i + 7] * w7[j]))


@_inline
def _tile(wide, four, c, c0, ldc, a, a_r, a_rs, a_ks, b, j, ldb, n_k, alpha):
    """One ``_tile_fma``: four rows or one, by three vectors or one."""
    if wide and four:
        _tile_fma(4, 3, c, c0, ldc, a, a_r, a_rs, a_ks, b, j, ldb, n_k, alpha)
    elif wide:
        _tile_fma(1, 3, c, c0, ldc, a, a_r, a_rs, a_ks, b, j, ldb, n_k, alpha)
    elif four:
        _tile_fma(4, 1, c, c0, ldc, a, a_r, a_rs, a_ks, b, j, ldb, n_k, alpha)
    else:
        _tile_fma(1, 1, c, c0, ldc, a, a_r, a_rs, a_ks, b, j, ldb, n_k, alpha)


@_inline
def _product(c, ldc, a, a0, a_rs, a_ks, b, ldb, n_rows, n_k, n_cols, alpha, rows_outer):
    """c[r ldc + j] += alpha * sum over k < n_k of a[a0 + r a_rs + k a_ks] * b[k ldb + j]
    (flat elements) for r < n_rows, j < n_cols, by ``_tile_fma``: column panels
    of three vectors, then of one; rows by four, then by one; the last columns,
    fewer than a vector, by scalar loops.  Panels outer when b is the big operand
    (each panel of b is read once for all rows); rows outer when c is and its
    rows alias in the caches (see ``_update_tiled``): c is then walked in
    memory order."""
    lanes = _VEC_BYTES // c.itemsize
    j_end = n_cols // lanes * lanes
    if rows_outer:
        r = 0
        while r < n_rows:
            four = r + 4 <= n_rows
            j = 0
            while j < j_end:
                wide = j + 3 * lanes <= n_cols
                _tile(wide, four, c, r * ldc + j, ldc, a, a0 + r * a_rs, a_rs, a_ks, b, j, ldb, n_k, alpha)
                j += 3 * lanes if wide else lanes
            r += 4 if four else 1
    else:
        j = 0
        while j < j_end:
            wide = j + 3 * lanes <= n_cols
            r = 0
            while r < n_rows:
                four = r + 4 <= n_rows
                _tile(wide, four, c, r * ldc + j, ldc, a, a0 + r * a_rs, a_rs, a_ks, b, j, ldb, n_k, alpha)
                r += 4 if four else 1
            j += 3 * lanes if wide else lanes
    # The last columns, fewer than a vector: four rows at a time, so that four
    # sums advance together instead of one chain of dependent multiply-adds
    # (the whole forward of 16 x 256 x 10 2.1x faster, its update 1.7x; Zen 3).
    cf, af, bf = c.reshape(-1), a.reshape(-1), b.reshape(-1)
    zero = c.dtype.type(0)
    for jj in range(j_end, n_cols):
        r = 0
        while r + 4 <= n_rows:
            p = a0 + r * a_rs
            s0 = s1 = s2 = s3 = zero
            for k in range(n_k):
                bk, q = bf[k * ldb + jj], p + k * a_ks
                s0 += af[q] * bk
                s1 += af[q + a_rs] * bk
                s2 += af[q + 2 * a_rs] * bk
                s3 += af[q + 3 * a_rs] * bk
            o = r * ldc + jj
            cf[o] += alpha * s0
            cf[o + ldc] += alpha * s1
            cf[o + 2 * ldc] += alpha * s2
            cf[o + 3 * ldc] += alpha * s3
            r += 4
        for rr in range(r, n_rows):
            s = zero
            for k in range(n_k):
                s += af[a0 + rr * a_rs + k * a_ks] * bf[k * ldb + jj]
            cf[rr * ldc + jj] += alpha * s


@_inline
def _forward_rows(x, w, a, r0):
    """a[r] += x[r] @ w for rows r >= r0 by loops that sweep each row of a with
    eight rows of w at a time, two rows of a per sweep (for the last 0-3 rows,
    where a four-row register tile would be mostly empty)."""
    n_rows, n_in = x.shape
    i = 0
    while i + 8 <= n_in:
        w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
        w4, w5, w6, w7 = w[i + 4], w[i + 5], w[i + 6], w[i + 7]
        r = r0
        while r + 2 <= n_rows:
            p, q, ar, br = x[r], x[r + 1], a[r], a[r + 1]
            for j in range(ar.size):
                ar[j] += _dot8(p, i, w0, w1, w2, w3, w4, w5, w6, w7, j)
                br[j] += _dot8(q, i, w0, w1, w2, w3, w4, w5, w6, w7, j)
            r += 2
        if r < n_rows:
            p, ar = x[r], a[r]
            for j in range(ar.size):
                ar[j] += _dot8(p, i, w0, w1, w2, w3, w4, w5, w6, w7, j)
        i += 8
    while i < n_in:
        wi = w[i]
        for r in range(r0, n_rows):
            xi = x[r, i]
            ar = a[r]
            for j in range(ar.size):
                ar[j] += xi * wi[j]
        i += 1


# The forward's tiles run over the rows of w in blocks of this many: each panel of
# w (three vectors wide) is read once per four rows of x, and a block of it is
# still cached for the next four, where a whole panel of 784 rows 1 KiB apart was
# not (rows that far apart share few cache sets).  Measured against whole panels,
# Zen 3: 16 x 784 x 256 1.22x, 8 x 784 x 256 1.15x, 16 x 512 x 512 1.11x faster,
# 16 x 256 x 256 level; blocks of 64 and 256 rows within 5% of 128.
_FWD_K_BLOCK = 128


@_jit_fma
def _forward_loops(x, w, b, kind, al, K, a, y):
    """a = x @ w + b, y = f(a) (C-contiguous arrays): register tiles for each
    four rows (measured 1.3-1.6x faster than the sweeping loops at B = 4-16,
    784 x 256 and 256 x 256, Zen 3), the sweeping loops for the rest."""
    _wide_vectors()
    n_rows, n_in = x.shape
    n = w.shape[1]
    bias = b[0]
    for r in range(n_rows):
        _copy_row(bias, a[r])
    n4 = n_rows // 4 * 4
    k0 = 0
    while n4 > 0 and k0 < n_in:
        kb = min(_FWD_K_BLOCK, n_in - k0)
        _product(a, n, x, k0, n_in, 1, w[k0:], n, n4, kb, n, a.dtype.type(1), False)
        k0 += kb
    _forward_rows(x, w, a, n4)
    for r in range(n_rows):
        _act_row(kind, al, a[r], y[r], K)


@_inline
def _copy_row(src, dst):
    """dst[:src.size] = src, as a loop: a slice assignment between arrays compiles
    numba's shape-mismatch error formatting into its caller (a cold
    ``fastnet.warmup()`` took 85-88 s with these loops, 90-92 s without; Zen 3)."""
    for j in range(src.size):
        dst[j] = src[j]


@_inline
def _dot4(x0, x1, x2, x3, g0, g1, g2, g3, j):
    return x0 * g0[j] + x1 * g1[j] + x2 * g2[j] + x3 * g3[j]


@_inline
def _last_x(x, i, last, m, inv, zero):
    """x[last:last + 4, i] * inv, zeros past the m samples that exist."""
    x1 = x[last + 1, i] * inv if m > 1 else zero
    x2 = x[last + 2, i] * inv if m > 2 else zero
    x3 = x[last + 3, i] * inv if m > 3 else zero
    return x[last, i] * inv, x1, x2, x3


@_jit_fma
def _update_rows(x, g, w, v, lr, mu, wd, nesterov, tiny):
    """The SGD update of w for dw = x.T @ g / B, without materialising dw.

    Plain SGD (no momentum, no weight decay) with more than four samples: by
    register tiles straight into w (``_update_tiled``; 1.25-1.8x faster than
    the loops below at 784 x 256, B = 5-16, Zen 3; at B <= 4 the loops win).
    Otherwise one row of w at a time: each row's gradient is summed four
    samples per sweep; the last sweep, over the last 1-4 samples (padded with
    zeros, which add exactly nothing), applies the update as it sums, so B <= 4
    takes one sweep over a row of w (measured 1.2-1.6x faster than the
    sum-then-update loops it replaced, at 784 x 256 and B = 1-16)."""
    T = w.dtype.type
    B, n = x.shape[0], w.shape[1]
    if B > 4 and mu == 0 and wd == 0:
        _update_tiled(x, g, w, lr)
        return
    last = (B - 1) // 4 * 4  # the samples of the last sweep: last, ..., B - 1
    gl = np.zeros((4, n), g.dtype)  # their rows of g, zero-padded to four (4 n values)
    for r in range(last, B):
        _copy_row(g[r], gl[r - last])
    if mu == 0:
        _update_rows_plain(x, g, gl, w, T(1) / T(B), lr, wd, last)
    else:
        _update_rows_momentum(x, g, gl, w, v, T(1) / T(B), lr, mu, wd, nesterov, tiny, last)


@_inline
def _aliasing(a):
    """Whether the rows of C-contiguous ``a`` are a multiple of 2 KiB long."""
    return a.shape[1] * a.itemsize % 2048 == 0


@_inline
def _unaliased_rows(a):
    """``a`` and its row length, or, when ``_aliasing(a)``, a copy with rows one
    cache line longer and that length."""
    n_rows, n = a.shape
    if not _aliasing(a):
        return a, n
    padded = np.empty((n_rows, n + 64 // a.itemsize), a.dtype)
    for r in range(n_rows):
        _copy_row(a[r], padded[r])
    return padded, padded.shape[1]


@_jit_fma
def _update_tiled(x, g, w, lr):
    """Plain SGD, w -= lr x.T @ g / B, by register tiles straight into w."""
    T = w.dtype.type
    n_rows, n_in = x.shape
    n = w.shape[1]
    # x and g are read down their columns, a row apart.  Where a row is a multiple
    # of 2 KiB long (512 or 1024 float32) those reads all fall in one or two sets of
    # the L1 cache and evict each other: there they are copied to rows one cache
    # line longer, and w (equally long rows) is walked in memory order (1.1-1.15x
    # at 16 x 512 x 512, 1.4-1.7x at 16 x 1024 x 1024; elsewhere the copy cost 0.8x).
    xp, ldx = _unaliased_rows(x)
    gp, ldg = _unaliased_rows(g)
    _product(w, n, xp, 0, 1, ldx, gp, ldg, n_in, n_rows, n, -lr / T(n_rows), _aliasing(w))


@_jit_fma
def _weight_grad_tiled(x, dz, dw):
    """dw = x.T @ dz / B (C-contiguous, one dtype) by register tiles."""
    dw[:] = 0
    _update_tiled(x, dz, dw, dw.dtype.type(-1))  # dw -= (-1) x.T @ dz / B


@_inline
def _row_grad_head(x, g, i, last, inv, d):
    """d = the gradient of row i summed over the samples before ``last``: like
    ``_add_weight_grad_row`` on x[:last], but the first group assigns instead of
    zeroing d first (measured 1.1-1.4x faster for the whole update at B = 5-16,
    before plain SGD there moved to ``_update_tiled``: now with momentum or weight decay)."""
    for r in range(0, last, 4):
        h0, h1, h2, h3 = g[r], g[r + 1], g[r + 2], g[r + 3]
        y0, y1, y2, y3 = x[r, i] * inv, x[r + 1, i] * inv, x[r + 2, i] * inv, x[r + 3, i] * inv
        if r == 0:
            for j in range(d.size):
                d[j] = _dot4(y0, y1, y2, y3, h0, h1, h2, h3, j)
        else:
            for j in range(d.size):
                d[j] += _dot4(y0, y1, y2, y3, h0, h1, h2, h3, j)


@_inline
def _update_setup(x, gl, w, last):
    """What both update loops start from: the row width n, the m samples of the
    last sweep, a typed zero, a row of scratch d, and the last sweep's rows of g."""
    n = w.shape[1]
    return n, x.shape[0] - last, w.dtype.type(0), np.empty(n, w.dtype), gl[0], gl[1], gl[2], gl[3]


@_jit_fma
def _update_rows_plain(x, g, gl, w, inv, lr, wd, last):
    _wide_vectors()
    n, m, zero, d, g0, g1, g2, g3 = _update_setup(x, gl, w, last)
    for i in range(w.shape[0]):
        wi = w[i]
        x0, x1, x2, x3 = _last_x(x, i, last, m, inv, zero)
        if x.shape[0] == 1:  # one sample: one multiply-add per element, not four
            for j in range(n):
                wi[j] -= lr * (wd * wi[j] + x0 * g0[j])
        elif last == 0:
            for j in range(n):
                wi[j] -= lr * (wd * wi[j] + _dot4(x0, x1, x2, x3, g0, g1, g2, g3, j))
        else:
            _row_grad_head(x, g, i, last, inv, d)
            for j in range(n):
                wi[j] -= lr * (d[j] + wd * wi[j] + _dot4(x0, x1, x2, x3, g0, g1, g2, g3, j))


@_jit_fma
def _update_rows_momentum(x, g, gl, w, v, inv, lr, mu, wd, nesterov, tiny, last):
    _wide_vectors()
    n, m, zero, d, g0, g1, g2, g3 = _update_setup(x, gl, w, last)
    for i in range(w.shape[0]):
        wi, vr = w[i], v[i]
        x0, x1, x2, x3 = _last_x(x, i, last, m, inv, zero)
        if x.shape[0] == 1:
            for j in range(n):
                _momentum_rule(wi, vr, j, wd * wi[j] + x0 * g0[j], lr, mu, nesterov, tiny, zero)
        elif last == 0:
            for j in range(n):
                _momentum_rule(wi, vr, j, wd * wi[j] + _dot4(x0, x1, x2, x3, g0, g1, g2, g3, j),
                               lr, mu, nesterov, tiny, zero)
        else:
            _row_grad_head(x, g, i, last, inv, d)
            for j in range(n):
                _momentum_rule(wi, vr, j, d[j] + wd * wi[j] + _dot4(x0, x1, x2, x3, g0, g1, g2, g3, j),
                               lr, mu, nesterov, tiny, zero)


@_jit_fma
def _update_bias(g, b, v, lr, mu, wd, nesterov, tiny):
    """The SGD update of b for db = the column mean of g."""
    _wide_vectors()
    d = np.zeros(b.shape[1], b.dtype)
    inv = b.dtype.type(1) / b.dtype.type(g.shape[0])
    for r in range(g.shape[0]):
        for j in range(d.size):
            d[j] += g[r, j] * inv
    _sgd_row(b[0], d, v[0] if mu != 0 else d, lr, mu, wd, nesterov, tiny)


@_jit
def fused_sgd_step(x, t, ws, bs, vws, vbs, kinds, alphas, as_, ys, gs, loss_kind, lr, momentum,
                   weight_decay, nesterov):
    """Same contract as ``_numpy.fused_sgd_step``, in one compiled call."""
    _wide_vectors()
    T = x.dtype.type
    K = _consts(x)
    lr_, mu, wd, tiny = T(lr), T(momentum), T(weight_decay), _tiny(x)
    n_layers = len(ws)
    for i in range(n_layers):
        x_i = x if i == 0 else ys[i - 1]
        _forward_loops(x_i, ws[i], bs[i], kinds[i], T(alphas[i]), K, as_[i], ys[i])
    loss = loss_value(loss_kind, ys[n_layers - 1], t)
    if not math.isfinite(loss):
        return loss
    loss_grad(loss_kind, ys[n_layers - 1], t, gs[n_layers - 1])
    for i in range(n_layers - 1, -1, -1):
        x_i = x if i == 0 else ys[i - 1]
        g = gs[i]
        for r in range(g.shape[0]):
            _grad_row(kinds[i], T(alphas[i]), as_[i][r], ys[i][r], g[r], g[r], K)
        if i > 0:
            _input_grad_small(g, ws[i], gs[i - 1])  # with the weights before their update
        _update_rows(x_i, g, ws[i], vws[i], lr_, mu, wd, nesterov, tiny)
        _update_bias(g, bs[i], vbs[i], lr_, mu, wd, nesterov, tiny)
    return loss

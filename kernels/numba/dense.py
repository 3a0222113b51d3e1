"""The dense layer's passes, compiled (twin: ``fastnet.kernels.numpy.dense``).

How the work is split (measured; see ``tuning``):

* Large batches are GEMM-bound.  The three matrix products of a layer stay on
  NumPy's BLAS, written into the caller's buffers (``np.matmul(..., out=)``),
  and everything else is fused into single compiled passes
  (``activations.forward_epilogue``, ``activations.backward_prologue``).
* At small batches OpenBLAS is slow: there compiled loops walk the weight rows
  once (rank-B updates of ``dw``, dot products for ``dx``), and register tiles
  (``tiles``) compute ``x @ w``.

Multiply-adds may contract into FMAs in these loops, and the dot products may
reassociate (several accumulators, vectorised): both change rounding by a few
ulp, within the agreement tolerances, and neither changes NaN or inf semantics.
"""

import numpy as np

from fastnet.kernels._blas import gemm

from .activations import FORWARD, backward_prologue, forward_epilogue
from .cpu import by_code, jit, jit_dot, jit_fma, wide_vectors
from .tiles import product
from .tuning import (
    DW_LOOPS_MAX_BATCH,
    DW_TILES_MAX_BATCH,
    DX_LOOPS_MAX_BATCH,
    DX_LOOPS_MIN_BATCH,
    FWD_K_BLOCK,
    FWD_LOOPS_MAX_BATCH,
    FWD_LOOPS_MIN_BATCH,
    loops_up_to,
)

__all__ = ["dense_backward", "dense_forward", "input_grad"]

# A kernel called from another kernel with a Python int or bool constant is
# compiled for that constant (numba types it as a Literal): once per distinct
# value.  These typed constants are not literals.
_0, _1 = np.intp(0), np.intp(1)


# -- the public kernels: dispatch by batch size ------------------------------------------------
def dense_forward(x, w, b, kind, alpha, a, y):
    """Same contract as ``fastnet.kernels.numpy.dense_forward``."""
    if _fwd_by_loops(x, w, b, a, y):
        if x.shape[0] >= 4:
            forward_tiles(x, w, b, a)
        if x.shape[0] % 4:
            FORWARD_ROWS[forward_rows_code(x.shape[0])](x, w, b, a)
        FORWARD[kind](b, float(alpha), a, y, False)
        return y
    np.matmul(x, w, out=a)
    forward_epilogue(b, kind, alpha, a, y)
    return y


def dense_backward(x, a, y, dy, kind, alpha, dz, dw, db):
    """Same contract as ``fastnet.kernels.numpy.dense_backward``."""
    backward_prologue(kind, alpha, a, y, dy, dz, db)
    return weight_grad(x, dz, dw)


def input_grad(dz, w, dx):
    """Same contract as ``fastnet.kernels.numpy.input_grad``."""
    if DX_LOOPS_MIN_BATCH <= dz.shape[0] <= loops_up_to(DX_LOOPS_MAX_BATCH, w.nbytes):
        INPUT_GRAD_SMALL[input_grad_code(dz.shape[0])](dz, w, dx)
    else:
        np.matmul(dz, w.T, out=dx)
    return dx








def weight_grad(x, dz, dw):
    """dw = x.T @ dz / B, by compiled loops, register tiles or BLAS as measured best."""
    batch = x.shape[0]
    if batch <= loops_up_to(DW_LOOPS_MAX_BATCH, dw.nbytes):
        weight_grad_small(x, dz, dw)
    elif batch <= loops_up_to(DW_TILES_MAX_BATCH, dw.nbytes) and _tiles_take(dw, x, dz):
        weight_grad_tiled(x, dz, dw)
    elif not gemm(1.0 / batch, x.T, dz, 0.0, dw):  # BLAS applies the 1/B itself
        np.matmul(x.T, dz, out=dw)  # no direct BLAS here: scale in a second pass
        np.multiply(dw, dw.dtype.type(1.0 / batch), out=dw)
    return dw


def _tiles_take(out, *arrays):
    """Whether the register tiles take these arrays: C-contiguous, all of out's dtype."""
    return all(t.flags.c_contiguous and t.dtype == out.dtype for t in (out, *arrays))


def _fwd_by_loops(x, w, b, a, y):
    """x @ w (with bias and activation) by ``forward_tiles`` and ``FORWARD_ROWS``:
    for their batch sizes, and arrays they take (C-contiguous, one dtype)."""
    return (FWD_LOOPS_MIN_BATCH <= x.shape[0] <= loops_up_to(FWD_LOOPS_MAX_BATCH, w.nbytes)
            and _tiles_take(a, x, w, b, y))


# -- the register-tile product ---------------------------------------------------------------
# ``product(c, ldc, a, a0, a_rs, a_ks, b, ldb, n_rows, n_k, n_cols, alpha, rows_outer, fours)``
# (``tiles.product``): c[r ldc + j] += alpha * sum over k < n_k of a[a0 + r a_rs + k a_ks] * b[k ldb + j]
# (flat elements) for r < n_rows, j < n_cols, by register tiles: column panels of three vectors, then of
# one; rows by four, then by one (``fours``: True where n_rows is a multiple of four, so that the
# one-row tiles are not emitted); the last columns, fewer than a vector, by the tile in scalars,
# four rows at a time.  Panels outer when b is the big operand (each panel of b is read once for all
# rows); rows outer when c is and its rows alias in the caches (see ``update_tiled``): c is then walked
# in memory order.  Emitted as LLVM IR into its callers (where their constant arguments fold in), not
# inlined by numba: as a numba function inlined into its callers it cost 0.2-0.3 s of each one's compile.


@jit
def copy_row(src, dst):
    """dst[:src.size] = src, as a loop: a slice assignment between arrays compiles
    numba's shape-mismatch error formatting into its caller."""
    for j in range(src.size):
        dst[j] = src[j]


# -- forward: x @ w + b (the activation follows: ``activations.FORWARD``) ----------------------------
@jit_fma
def forward_tiles(x, w, b, a):
    """a = x @ w + b for the first B // 4 * 4 rows (C-contiguous arrays), by
    register tiles (measured 1.3-1.6x faster than the sweeping loops of
    ``FORWARD_ROWS`` at B = 4-16, 784 x 256 and 256 x 256, Zen 3)."""
    wide_vectors()
    n_rows, n_in = x.shape
    n = w.shape[1]
    n4 = n_rows // 4 * 4
    for r in range(n4):
        copy_row(b[0], a[r])
    k0 = 0
    while k0 < n_in:
        kb = n_in - k0 if n_in - k0 < FWD_K_BLOCK else FWD_K_BLOCK
        product(a, n, x, k0, n_in, _1, w[k0:], n, n4, kb, n, a.dtype.type(1), False, True)
        k0 += kb


def _make_forward_rows(pairs):
    def forward_rows(x, w, b, a):
        """a = x @ w + b for the rows after the first B // 4 * 4 (the last 1-3, where
        a four-row register tile would be mostly empty), by loops that sweep each
        row of a with eight rows of w at a time: two rows of a per sweep, and the
        last alone (``pairs`` False: one row is left, and the pair loop is not
        compiled)."""
        wide_vectors()
        n_rows, n_in = x.shape
        r0 = n_rows // 4 * 4
        for r in range(r0, n_rows):
            copy_row(b[0], a[r])
        i = 0
        while i + 8 <= n_in:
            w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
            w4, w5, w6, w7 = w[i + 4], w[i + 5], w[i + 6], w[i + 7]
            r = r0
            if pairs:
                while r + 2 <= n_rows:
                    p, q, ar, br = x[r], x[r + 1], a[r], a[r + 1]
                    p0, p1, p2, p3 = p[i], p[i + 1], p[i + 2], p[i + 3]
                    p4, p5, p6, p7 = p[i + 4], p[i + 5], p[i + 6], p[i + 7]
                    q0, q1, q2, q3 = q[i], q[i + 1], q[i + 2], q[i + 3]
                    q4, q5, q6, q7 = q[i + 4], q[i + 5], q[i + 6], q[i + 7]
                    for j in range(ar.size):
                        ar[j] += ((p0 * w0[j] + p1 * w1[j] + p2 * w2[j] + p3 * w3[j])
                                  + (p4 * w4[j] + p5 * w5[j] + p6 * w6[j] + p7 * w7[j]))
                        br[j] += ((q0 * w0[j] + q1 * w1[j] + q2 * w2[j] + q3 * w3[j])
                                  + (q4 * w4[j] + q5 * w5[j] + q6 * w6[j] + q7 * w7[j]))
                    r += 2
            if r < n_rows:
                p, ar = x[r], a[r]
                p0, p1, p2, p3 = p[i], p[i + 1], p[i + 2], p[i + 3]
                p4, p5, p6, p7 = p[i + 4], p[i + 5], p[i + 6], p[i + 7]
                for j in range(ar.size):
                    ar[j] += ((p0 * w0[j] + p1 * w1[j] + p2 * w2[j] + p3 * w3[j])
                              + (p4 * w4[j] + p5 * w5[j] + p6 * w6[j] + p7 * w7[j]))
            i += 8
        while i < n_in:
            wi = w[i]
            for r in range(r0, n_rows):
                xi = x[r, i]
                ar = a[r]
                for j in range(ar.size):
                    ar[j] += xi * wi[j]
            i += 1

    return forward_rows


#: ``FORWARD_ROWS[code](x, w, b, a)``: code ``forward_rows_code(B)``.  Split so
#: that B % 4 == 1 (B = 1 above all) compiles the one-row sweep alone.
FORWARD_ROWS = by_code(lambda code: _make_forward_rows(code == 1), ("one", "pairs"), jit_fma)


def forward_rows_code(batch):
    """Which ``FORWARD_ROWS`` kernel takes the last rows of a batch (B % 4 != 0)."""
    return 0 if batch % 4 == 1 else 1


# -- backward: the weight gradient and the input gradient ------------------------------------------
@jit_fma
def weight_grad_small(x, dz, dw):
    """dw = x.T @ dz / B, each row of dw written once: four rows of dz per sweep
    over a row of dw (a quarter of the stores of one rank-1 update at a time)."""
    wide_vectors()
    n_rows = x.shape[0]
    inv = x.dtype.type(1) / x.dtype.type(n_rows)
    for i in range(x.shape[1]):
        row = dw[i]
        for j in range(row.size):
            row[j] = 0
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


def padded_size(batch, n_in, n_out, itemsize):
    """Elements of scratch ``update_tiled`` needs for x (batch, n_in) and g (batch,
    n_out): room for copies of those whose rows alias (see there)."""
    pad = 64 // itemsize
    return sum(batch * (n + pad) for n in (n_in, n_out) if aliasing(n, itemsize))


@jit(inline="always")
def _unaliased(a, scratch, start):
    """(a, its row length, start), or, where a's rows are a multiple of 2 KiB long,
    (a copy in scratch[start:] with rows one cache line longer, that length, the
    end of the copy in scratch)."""
    n_rows, n = a.shape
    if n * a.itemsize % 2048:
        return a, n, start
    ld = n + 64 // a.itemsize
    padded = scratch[start:start + n_rows * ld].reshape((n_rows, ld))
    for r in range(n_rows):
        copy_row(a[r], padded[r])
    return padded, ld, start + n_rows * ld


def aliasing(n, itemsize):
    """Whether rows of n elements are a multiple of 2 KiB long (see ``update_tiled``)."""
    return n * itemsize % 2048 == 0


@jit_fma
def update_tiled(x, g, w, lr, scratch):
    """Plain SGD, w -= lr x.T @ g / B, by register tiles straight into w (scratch:
    1-D, at least ``padded_size`` elements of w's dtype)."""
    T = w.dtype.type
    n_rows, n_in = x.shape
    n = w.shape[1]
    # x and g are read down their columns, a row apart.  Where a row is a multiple
    # of 2 KiB long (512 or 1024 float32) those reads all fall in one or two sets of
    # the L1 cache and evict each other: there they are copied to rows one cache
    # line longer, and w (equally long rows) is walked in memory order (1.1-1.15x
    # at 16 x 512 x 512, 1.4-1.7x at 16 x 1024 x 1024; elsewhere the copy cost 0.8x).
    xp, ldx, used = _unaliased(x, scratch, 0)
    gp, ldg, _ = _unaliased(g, scratch, used)
    product(w, n, xp, _0, _1, ldx, gp, ldg, n_in, n_rows, n, -lr / T(n_rows), n * w.itemsize % 2048 == 0,
            False)


@jit_fma
def update_tiled_unaliased(x, g, w, lr, scratch):
    """``update_tiled`` where no row of x, g or w aliases (``aliasing``): the same
    product without the copies and with panels outer, half the code to compile
    (scratch unused)."""
    T = w.dtype.type
    n_rows, n_in = x.shape
    n = w.shape[1]
    product(w, n, x, _0, _1, n_in, g, n, n_in, n_rows, n, -lr / T(n_rows), False, False)


def rows_alias(n_in, n_out, itemsize):
    """Whether a tiled update of w (n_in x n_out) must take ``update_tiled``: a row
    of x, g or w aliases.  Else ``update_tiled_unaliased`` takes it."""
    return aliasing(n_in, itemsize) or aliasing(n_out, itemsize)


_MINUS_ONE = {np.dtype(t): t(-1) for t in (np.float32, np.float64)}
_NO_SCRATCH = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}


def weight_grad_tiled(x, dz, dw):
    """dw = x.T @ dz / B (C-contiguous, one dtype) by register tiles: the tiled
    update of zeros with a step of -1 (one kernel to compile, not two).  The
    common case (no aliasing rows) takes no Python work beyond the call, which
    is all of its overhead at small batches (7 us of 13 at 8 x 256 x 10)."""
    dw.fill(0)
    n_in, n_out = dw.shape
    if rows_alias(n_in, n_out, dw.itemsize):
        update_tiled(x, dz, dw, _MINUS_ONE[dw.dtype],
                     np.empty(padded_size(x.shape[0], n_in, n_out, dw.itemsize), dw.dtype))
    else:
        update_tiled_unaliased(x, dz, dw, _MINUS_ONE[dw.dtype], _NO_SCRATCH[dw.dtype])
    return dw


def _make_input_grad_small(blocks):
    def input_grad_small(dz, w, dx):
        """dx[r, i] = dz[r] . w[i]: contiguous dot products, each row of w read once;
        two rows of w by four rows of dz per sweep, eight sums at a time (measured
        1.25-1.55x faster than one row of w per sweep at 256 x 256, 512 x 512 and
        784 x 256, B = 4-16, Zen 3: fewer loads per multiply-add), then the last
        rows one at a time (``blocks`` False: B < 4, only those are compiled)."""
        wide_vectors()
        n_rows, n = dz.shape
        n_in = w.shape[0]
        zero = dz.dtype.type(0)
        for i in range(0, n_in, 2):
            pair = i + 1 < n_in
            wi = w[i]
            wk = w[i + 1] if pair else wi  # an odd last row is summed twice, stored once
            r = 0
            if blocks:
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

    return input_grad_small


#: ``INPUT_GRAD_SMALL[code](dz, w, dx)``: code ``input_grad_code(B)`` (B < 4
#: compiles the row-by-row loop alone).
INPUT_GRAD_SMALL = by_code(lambda code: _make_input_grad_small(code == 1), ("rows", "blocks"), jit_dot)


def input_grad_code(batch):
    """Which ``INPUT_GRAD_SMALL`` kernel takes a batch of this size."""
    return 0 if batch < 4 else 1

"""The fused step's own weight and bias updates: SGD applied to w straight
from ``x.T @ g`` (no ``dw``), row by row, for the register tiles' batch
sizes, and the updates after BLAS has formed the velocity or dw (no twin in
``fastnet.kernels.numpy``: the reference forms dw and calls ``sgd_step``;
``fused`` calls these through their addresses).
"""

from .blas import axpy
from .cpu import by_code, jit, jit_fma, wide_vectors
from .dense import copy_row
from .optimizers import momentum_rule, tiny

__all__ = ["ROWS_CODES", "UPDATE_ROWS_MOMENTUM", "UPDATE_ROWS_PLAIN", "axpy_apply", "momentum_apply",
           "rows_code", "update_bias_momentum", "update_bias_plain"]


# -- the updates, without materialising dw -------------------------------------------------------
# One row of w at a time: each row's gradient is summed four samples per sweep;
# the last sweep, over the last 1-4 samples (padded with zeros, which add exactly
# nothing), applies the update as it sums, so B <= 4 takes one sweep over a row
# of w (measured 1.2-1.6x faster than the sum-then-update loops it replaced, at
# 784 x 256 and B = 1-16, Zen 3).  Plain SGD of ``UPDATE_TILES_MIN_BATCH`` rows
# and more goes to ``dense.update_tiled`` instead.  ``scratch`` (1-D, w's dtype)
# holds the last sweep's rows of g and a row of partial sums: 5 n elements.
@jit(inline="always")
def _last_sweep(x, g, w, scratch):
    """The samples before the last sweep (``last``), how many the last sweep has
    (1-4), a row of scratch, and the last sweep's rows of g zero-padded to four."""
    B, n = x.shape[0], w.shape[1]
    last = (B - 1) // 4 * 4
    gl = scratch[:4 * n].reshape((4, n))
    for r in range(4):
        row = gl[r]
        if last + r < B:
            copy_row(g[last + r], row)
        else:
            for j in range(n):
                row[j] = 0
    return last, B - last, scratch[4 * n:5 * n], gl[0], gl[1], gl[2], gl[3]


@jit(inline="always")
def _last_x(x, i, last, m, inv, zero):
    """x[last:last + 4, i] * inv, zeros past the m samples that exist."""
    x1 = x[last + 1, i] * inv if m > 1 else zero
    x2 = x[last + 2, i] * inv if m > 2 else zero
    x3 = x[last + 3, i] * inv if m > 3 else zero
    return x[last, i] * inv, x1, x2, x3


@jit_fma
def _row_grad_head(x, g, i, last, inv, d):
    """d = the gradient of row i of w summed over the samples before ``last``,
    four at a time; the first group assigns instead of zeroing d first (measured
    1.1-1.4x faster for the whole update at B = 5-16)."""
    for r in range(0, last, 4):
        h0, h1, h2, h3 = g[r], g[r + 1], g[r + 2], g[r + 3]
        y0, y1, y2, y3 = x[r, i] * inv, x[r + 1, i] * inv, x[r + 2, i] * inv, x[r + 3, i] * inv
        if r == 0:
            for j in range(d.size):
                d[j] = y0 * h0[j] + y1 * h1[j] + y2 * h2[j] + y3 * h3[j]
        else:
            for j in range(d.size):
                d[j] += y0 * h0[j] + y1 * h1[j] + y2 * h2[j] + y3 * h3[j]


# Each row update comes in three kernels, by batch size (``rows_code``): B = 1
# (one multiply-add per element), 2 <= B <= 4 (the last sweep alone) and B >= 5;
# a step compiles the one its batch size takes.
ROWS_CODES = ("one", "four", "more")


def rows_code(batch):
    """Which row-update kernel takes a batch of this size."""
    return 0 if batch == 1 else 1 if batch <= 4 else 2


def _make_update_rows_plain(code):
    def update_rows_plain(x, g, w, lr, wd, scratch):
        """w -= lr (x.T @ g / B + wd w), one row of w at a time (scalars in w's dtype)."""
        wide_vectors()
        if code == 0:  # one sample: one multiply-add per element, and no last sweep to set up
            g0 = g[0]
            for i in range(w.shape[0]):
                wi, x0 = w[i], x[0, i]
                for j in range(wi.size):
                    wi[j] -= lr * (wd * wi[j] + x0 * g0[j])
            return
        T = w.dtype.type
        inv, zero = T(1) / T(x.shape[0]), T(0)
        last, m, d, g0, g1, g2, g3 = _last_sweep(x, g, w, scratch)
        for i in range(w.shape[0]):
            wi = w[i]
            x0, x1, x2, x3 = _last_x(x, i, last, m, inv, zero)
            if code == 1:
                for j in range(wi.size):
                    wi[j] -= lr * (wd * wi[j] + (x0 * g0[j] + x1 * g1[j] + x2 * g2[j] + x3 * g3[j]))
            else:
                _row_grad_head(x, g, i, last, inv, d)
                for j in range(wi.size):
                    wi[j] -= lr * (d[j] + wd * wi[j] + (x0 * g0[j] + x1 * g1[j] + x2 * g2[j] + x3 * g3[j]))

    return update_rows_plain


def _make_update_rows_momentum(code):
    def update_rows_momentum(x, g, w, v, lr, mu, wd, nesterov, scratch):
        """SGD with momentum (``sgd_step``'s rule) of w for dw = x.T @ g / B, one row
        of w and of its velocity v at a time (scalars in w's dtype)."""
        wide_vectors()
        T = w.dtype.type
        zero, small = T(0), tiny(w)
        if code == 0:  # one sample, as in update_rows_plain
            g0 = g[0]
            for i in range(w.shape[0]):
                wi, vr, x0 = w[i], v[i], x[0, i]
                for j in range(wi.size):
                    momentum_rule(wi, vr, j, wd * wi[j] + x0 * g0[j], lr, mu, nesterov, small, zero)
            return
        inv = T(1) / T(x.shape[0])
        last, m, d, g0, g1, g2, g3 = _last_sweep(x, g, w, scratch)
        for i in range(w.shape[0]):
            wi, vr = w[i], v[i]
            x0, x1, x2, x3 = _last_x(x, i, last, m, inv, zero)
            if code == 1:
                for j in range(wi.size):
                    momentum_rule(wi, vr, j, wd * wi[j] + (x0 * g0[j] + x1 * g1[j] + x2 * g2[j] + x3 * g3[j]),
                                  lr, mu, nesterov, small, zero)
            else:
                _row_grad_head(x, g, i, last, inv, d)
                for j in range(wi.size):
                    momentum_rule(wi, vr, j,
                                  d[j] + wd * wi[j] + (x0 * g0[j] + x1 * g1[j] + x2 * g2[j] + x3 * g3[j]),
                                  lr, mu, nesterov, small, zero)

    return update_rows_momentum


#: ``UPDATE_ROWS_PLAIN[rows_code(B)](x, g, w, lr, wd, scratch)`` and
#: ``UPDATE_ROWS_MOMENTUM[rows_code(B)](x, g, w, v, lr, mu, wd, nesterov, scratch)``.
UPDATE_ROWS_PLAIN = by_code(_make_update_rows_plain, ROWS_CODES, jit_fma)
UPDATE_ROWS_MOMENTUM = by_code(_make_update_rows_momentum, ROWS_CODES, jit_fma)


@jit_fma
def _bias_grad(g, d):
    """d = the column mean of g."""
    inv = g.dtype.type(1) / g.dtype.type(g.shape[0])
    for j in range(d.size):
        d[j] = 0
    for r in range(g.shape[0]):
        for j in range(d.size):
            d[j] += g[r, j] * inv


@jit_fma
def update_bias_plain(g, b, lr, wd, scratch):
    """b -= lr (db + wd b), db = the column mean of g (scratch: b's size at least)."""
    d = scratch[:b.shape[1]]
    _bias_grad(g, d)
    bias = b[0]
    for j in range(d.size):
        bias[j] -= lr * (d[j] + wd * bias[j])


@jit_fma
def update_bias_momentum(g, b, v, lr, mu, wd, nesterov, scratch):
    """SGD with momentum of b and its velocity v for db = the column mean of g."""
    d = scratch[:b.shape[1]]
    _bias_grad(g, d)
    bias, vb, zero = b[0], v[0], b.dtype.type(0)
    small = tiny(b)
    for j in range(d.size):
        momentum_rule(bias, vb, j, d[j] + wd * bias[j], lr, mu, nesterov, small, zero)


@jit_fma
def momentum_apply(w, v, lr, wd):
    """The rest of ``momentum_rule`` once BLAS has formed v = mu v + x.T @ g / B in
    v: v += wd w, its subnormals flushed, then w -= lr v (no Nesterov)."""
    wide_vectors()
    small, zero = tiny(w), w.dtype.type(0)
    wf, vf = w.reshape(-1), v.reshape(-1)
    for i in range(wf.size):
        vi = vf[i] + wd * wf[i]
        if abs(vi) < small:
            vi = zero
        vf[i] = vi
        wf[i] -= lr * vi


@jit
def axpy_apply(fn, wide, w, d, lr, wd):
    """``momentum_apply`` (d = v) or plain SGD's update with weight decay (d = dw)
    once BLAS has formed d, by BLAS's ``?axpy`` at ``fn`` (``blas.axpy``, on
    BLAS's threads): d += wd w (when wd is not 0), then w -= lr d.  Nothing is
    flushed: the step calls ``momentum_apply`` where v's subnormals must go."""
    if wd != 0:
        axpy(fn, wide, wd, w, d)
    axpy(fn, wide, -lr, d, w)

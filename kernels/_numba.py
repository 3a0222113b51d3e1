"""The JIT kernels: the names and signatures of ``_numpy``, compiled with Numba.

This is the only module of fastnet that imports numba; ``fastnet.backend``
imports it when the numba backend is first asked for.

How the work is split (measured; see ``benchmarks/jit_vs_numpy.py``):

* Large batches are GEMM-bound.  The three matrix products of a dense layer
  stay on NumPy's BLAS, written into the caller's buffers (``np.matmul(...,
  out=)``), and everything else is fused into single compiled passes: bias and
  activation after ``x @ w``; activation derivative, ``dy`` and the bias
  gradient's column sum before ``x.T @ dz`` and ``dz @ w.T``.
* Small batches (``B <= SMALL_BATCH``) are bound by memory and call overhead,
  where BLAS is slow to start: compiled loops walk the weight rows once
  (``a[r] += x[r, i] * w[i]``, rank-B updates of ``dw``, dot products for ``dx``).

No kernel starts threads of its own (no ``prange``): the only thread pool is
BLAS's, so the two can never oversubscribe the cores.  Scalars are cast to the
arrays' dtype inside the kernels and constants are typed the same way, so
float32 stays float32; the loss is accumulated in float64 and returned as the
arrays' dtype.
"""

import math

import numpy as np
from numba import njit

IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, ELU, SOFTPLUS, GELU = range(8)
MSE, SOFTMAX_XENT, BCE_LOGITS = range(3)

#: Batches up to this size use the compiled loops instead of BLAS.
SMALL_BATCH = 16

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_K = 0.044715
_GELU_CLIP = 10.0

_jit = njit(cache=True, nogil=True)


# -- scalar activations -----------------------------------------------------------
# A Python literal in a float32 expression would make it float64 in Numba, so
# the constants travel as a tuple typed like the arrays: ``_consts(a)``.
@_jit
def _consts(a):
    """(0, 1, 1/2, GELU clip, GELU c, GELU k, 3) in the dtype of array ``a``."""
    T = a.dtype.type
    return (T(0), T(1), T(0.5), T(_GELU_CLIP), T(_GELU_C), T(_GELU_K), T(3))


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
    zero, one, half, clip, c, k, _ = K
    if kind == IDENTITY:
        return v
    if kind == SIGMOID:
        return _sigmoid(v, K)
    if kind == TANH:
        return math.tanh(v)
    if kind == RELU:
        return v if v > zero else zero
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
    zero, one, half, clip, c, k, three = K
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
        y[:] = a
    elif kind == RELU:
        for j in range(a.size):
            v = a[j]
            y[j] = v if v > zero else zero
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
        dz[:] = dy
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


@_jit
def activation_forward(kind, alpha, a, y):
    """Same contract as ``_numpy.activation_forward``."""
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


@_jit
def activation_grad(kind, alpha, a, y, dy, dz):
    """Same contract as ``_numpy.activation_grad``."""
    _grad_row(kind, a.dtype.type(alpha), a.reshape(-1), y.reshape(-1), dy.reshape(-1),
              dz.reshape(-1), _consts(a))
    return dz


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
@_jit
def _forward_small(x, w, b, kind, alpha, a, y):
    """a = x @ w + b, y = f(a), walking the rows of w once for the whole batch."""
    al, K = a.dtype.type(alpha), _consts(a)
    n_rows, n_in = x.shape
    n = w.shape[1]
    for r in range(n_rows):
        a[r, :] = b[0, :]
    for i in range(n_in):
        for r in range(n_rows):
            xi = x[r, i]
            for j in range(n):
                a[r, j] += xi * w[i, j]
    for r in range(n_rows):
        _act_row(kind, al, a[r], y[r], K)


@_jit
def _weight_grad_small(x, dz, dw):
    """dw = x.T @ dz / B as B rank-1 updates per row of dw."""
    n_rows, n_in = x.shape
    n = dz.shape[1]
    inv = x.dtype.type(1) / x.dtype.type(n_rows)
    for i in range(n_in):
        dw[i, :] = 0
        for r in range(n_rows):
            xi = x[r, i] * inv
            for j in range(n):
                dw[i, j] += xi * dz[r, j]


@_jit
def _input_grad_small(dz, w, dx):
    """dx[r, i] = dz[r] . w[i]: one contiguous dot product per entry."""
    n_rows, n = dz.shape
    n_in = w.shape[0]
    for i in range(n_in):
        for r in range(n_rows):
            s = dz.dtype.type(0)
            for j in range(n):
                s += dz[r, j] * w[i, j]
            dx[r, i] = s


# -- dense layer: dispatch by batch size -----------------------------------------------
def dense_forward(x, w, b, kind, alpha, a, y):
    """Same contract as ``_numpy.dense_forward``."""
    if x.shape[0] <= SMALL_BATCH:
        _forward_small(x, w, b, kind, alpha, a, y)
    else:
        np.matmul(x, w, out=a)
        _bias_activation(b, kind, alpha, a, y)
    return y


def dense_backward(x, a, y, dy, kind, alpha, dz, dw, db):
    """Same contract as ``_numpy.dense_backward``."""
    _grad_and_bias_grad(kind, alpha, a, y, dy, dz, db)
    n_rows = x.shape[0]
    if n_rows <= SMALL_BATCH:
        _weight_grad_small(x, dz, dw)
    else:
        np.matmul(x.T, dz, out=dw)
        np.multiply(dw, dw.dtype.type(1.0 / n_rows), out=dw)
    return dw


def input_grad(dz, w, dx):
    """Same contract as ``_numpy.input_grad``."""
    if dz.shape[0] <= SMALL_BATCH:
        _input_grad_small(dz, w, dx)
    else:
        np.matmul(dz, w.T, out=dx)
    return dx


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


@_jit
def loss_value(kind, z, t):
    """Same contract as ``_numpy.loss_value`` (accumulated in float64)."""
    n_rows, c = z.shape
    total = 0.0
    for r in range(n_rows):
        if kind == SOFTMAX_XENT:
            m = z[r, 0]
            for j in range(1, c):
                m = max(m, z[r, j])
            s = 0.0
            dot = 0.0
            for j in range(c):
                s += math.exp(float(z[r, j] - m))
                dot += float(z[r, j]) * float(t[r, j])
            total += float(m) + math.log(s) - dot
        else:
            row = 0.0
            for j in range(c):
                v = float(z[r, j])
                if kind == MSE:
                    d = v - float(t[r, j])
                    row += d * d
                else:
                    row += max(v, 0.0) + math.log1p(math.exp(-abs(v))) - float(t[r, j]) * v
            total += row / c
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
    two = z.dtype.type(2)
    K = _consts(z)
    for r in range(n_rows):
        for j in range(c):
            if kind == MSE:
                out[r, j] = two * (z[r, j] - t[r, j]) / cc
            else:
                out[r, j] = (_sigmoid(z[r, j], K) - t[r, j]) / cc
    return out


# -- optimizers ---------------------------------------------------------------------------
@_jit
def sgd_step(p, g, v, lr, momentum, weight_decay, nesterov):
    """Same contract as ``_numpy.sgd_step``."""
    T = p.dtype.type
    lr_, mu, wd = T(lr), T(momentum), T(weight_decay)
    pf, gf = p.reshape(-1), g.reshape(-1)
    if momentum == 0:
        for i in range(pf.size):
            pf[i] -= lr_ * (gf[i] + wd * pf[i])
        return p
    vf = v.reshape(-1)
    for i in range(pf.size):
        d = gf[i] + wd * pf[i]
        vi = mu * vf[i] + d
        vf[i] = vi
        pf[i] -= lr_ * (d + mu * vi if nesterov else vi)
    return p


@_jit
def adam_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t):
    """Same contract as ``_numpy.adam_step``."""
    T = p.dtype.type
    b1, b2, eps_, wd, lr_ = T(beta1), T(beta2), T(eps), T(weight_decay), T(lr)
    one = T(1)
    c1 = T(1 - beta1**t)  # bias corrections, as the reference divides by them
    c2 = T(1 - beta2**t)
    pf, gf, mf, vf = p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1)
    for i in range(pf.size):
        d = gf[i] + wd * pf[i]
        mi = b1 * mf[i] + (one - b1) * d
        vi = b2 * vf[i] + (one - b2) * d * d
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

"""Optimizer updates, compiled (twin: ``fastnet.kernels.numpy.optimizers``).

The update bounds are the reference's own functions, compiled: one source
for the rule that decides whether a step may be applied.

Scalars are cast to the arrays' dtype inside the kernels, so float32 stays
float32.  ``momentum_rule`` is the SGD momentum rule for one element, shared
with the fused step's updates (``fused``); the SGD kernels' multiply-adds may
contract into FMAs (a rounding less, within the agreement tolerances).
"""

import math

import numpy as np

from ..numpy import optimizers as _ref
from .cpu import jit, jit_fma

__all__ = ["adam_step", "adam_update_bound", "flush_subnormal", "max_abs", "running_mean",
           "safe_limits", "sgd_step", "sgd_update_bound"]

safe_limits = _ref.safe_limits  # Python: called once per plan, not per step
sgd_update_bound = jit(_ref.sgd_update_bound)
adam_update_bound = jit(_ref.adam_update_bound)


@jit
def _all_finite(af):
    """Whether every value is finite: a count of comparisons, which LLVM
    vectorises, and which warns of nothing run as Python (v * 0 would, for inf)."""
    inf, finite = af.dtype.type(np.inf), 0
    for i in range(af.size):
        finite += abs(af[i]) < inf  # False for NaN and for +-inf
    return finite == af.size


@jit(fastmath={"nnan", "ninf", "nsz", "reassoc"})
def _finite_max_abs(af):
    """The largest magnitude of values known finite: the no-NaN flags let LLVM
    vectorise the max, which it may not do where a NaN could be met."""
    m = af.dtype.type(0)
    for i in range(af.size):
        v = abs(af[i])
        m = v if v > m else m
    return m


@jit
def max_abs(a):
    """Same contract as ``fastnet.kernels.numpy.max_abs``; inf for NaN (no NaN
    is kept: both mean "unsafe" to the bounds).  Two vectorised passes: 93 us
    for 200k floats on Zen 3, where one plain loop takes 240 us.  (A pass on
    the floats' bits through ``view`` took 45 us, but compiled numba's message
    formatting with it: 5 s more to the fused step's first use.)"""
    af = a.reshape(-1)
    if not _all_finite(af):
        return math.inf
    return float(_finite_max_abs(af))


_TINY32 = float(np.finfo(np.float32).tiny)
_TINY64 = float(np.finfo(np.float64).tiny)


@jit(inline="always")
def tiny(a):
    """The smallest normal number of a's dtype (float32 or float64)."""
    return a.dtype.type(_TINY32) if a.itemsize == 4 else a.dtype.type(_TINY64)


@jit
def flush_subnormal(a):
    """Same contract as ``fastnet.kernels.numpy.flush_subnormal``."""
    small, zero = tiny(a), a.dtype.type(0)
    af = a.reshape(-1)
    for i in range(af.size):
        if abs(af[i]) < small:  # False for NaN: NaN stays
            af[i] = zero
    return a


@jit_fma
def momentum_rule(wi, vr, j, dj, lr, mu, nesterov, small, zero):
    """The SGD momentum rule for element j of a row, given its gradient dj (weight
    decay included): the velocity, flushed to zero when subnormal, then the step."""
    vj = mu * vr[j] + dj
    if abs(vj) < small:  # flush_subnormal, fused
        vj = zero
    vr[j] = vj
    wi[j] -= lr * (dj + mu * vj if nesterov else vj)


@jit_fma
def sgd_step(p, g, v, lr, momentum, weight_decay, nesterov):
    """Same contract as ``fastnet.kernels.numpy.sgd_step``."""
    T = p.dtype.type
    lr_, mu, wd, zero = T(lr), T(momentum), T(weight_decay), T(0)
    pf, gf = p.reshape(-1), g.reshape(-1)
    if momentum == 0:  # as the reference decides: on the value given, not on it in p's dtype
        for i in range(pf.size):
            pf[i] -= lr_ * (gf[i] + wd * pf[i])
        return p
    vf, small = v.reshape(-1), tiny(p)
    for i in range(pf.size):  # momentum_rule, written out: one kernel to compile, not two
        d = gf[i] + wd * pf[i]
        vi = mu * vf[i] + d
        if abs(vi) < small:  # flush_subnormal, fused
            vi = zero
        vf[i] = vi
        pf[i] -= lr_ * (d + mu * vi if nesterov else vi)
    return p


@jit
def adam_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t):
    """Same contract as ``fastnet.kernels.numpy.adam_step``."""
    T = p.dtype.type
    b1, b2, eps_, wd, lr_ = T(beta1), T(beta2), T(eps), T(weight_decay), T(lr)
    one, zero, small = T(1), T(0), tiny(p)
    c1 = T(1 - beta1**t)  # bias corrections, as the reference divides by them
    c2 = T(1 - beta2**t)
    pf, gf, mf, vf = p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1)
    for i in range(pf.size):
        d = gf[i] + wd * pf[i]
        mi = b1 * mf[i] + (one - b1) * d
        vi = b2 * vf[i] + (one - b2) * d * d
        if abs(mi) < small:
            mi = zero
        if abs(vi) < small:
            vi = zero
        mf[i] = mi
        vf[i] = vi
        pf[i] -= lr_ * (mi / c1) / (math.sqrt(vi / c2) + eps_)
    return p


@jit
def running_mean(acc, g, frac):
    """Same contract as ``fastnet.kernels.numpy.running_mean``."""
    fr = acc.dtype.type(frac)
    af, gf = acc.reshape(-1), g.reshape(-1)
    for i in range(af.size):
        af[i] += fr * (gf[i] - af[i])
    return acc

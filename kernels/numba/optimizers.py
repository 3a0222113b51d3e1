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
from .cpu import float_bits, jit, jit_fma

__all__ = ["adam_step", "adam_update_bound", "flush_subnormal", "max_abs", "running_mean",
           "safe_limits", "sgd_step", "sgd_update_bound"]

safe_limits = _ref.safe_limits  # Python: called once per plan, not per step
sgd_update_bound = jit(_ref.sgd_update_bound)
adam_update_bound = jit(_ref.adam_update_bound)


@jit
def _max_magnitude_bits(bits):
    """The largest of ``bits`` with the sign bit cleared: an integer reduction,
    which LLVM vectorises (a float max is not, for NaN's sake, without
    fastmath).  Each masked value is cast back to the bits' type: numba widens
    ``uint32 & uint32`` to 64 bits, which halved the lanes (float32: 8.3 us for
    256 x 256 elements against 3.4 us with the cast, Emerald Rapids)."""
    T = bits.dtype.type
    mask = T(0x7FFFFFFF) if bits.itemsize == 4 else T(0x7FFFFFFFFFFFFFFF)
    m = T(0)
    for i in range(bits.size):
        m = max(m, T(bits[i] & mask))
    return m


@jit
def max_abs(a):
    """Same contract as ``fastnet.kernels.numpy.max_abs``; inf for NaN (no NaN
    is kept: both mean "unsafe" to the bounds).  On the floats' bits: with the
    sign cleared, IEEE magnitudes order as integers do, inf and NaN above every
    finite one; 5x the float loop's speed (45 us for 200k floats on Zen 3).
    Measured against two vectorised float passes (a count of finite values,
    then a max under the no-NaN flags): 111 us, and 8-10% of a B = 256 step
    against 4-7%; those compile 1-2 s less at the fused step's first use.
    ``float_bits`` picks the integer width while typing: views of both widths
    behind a test of the itemsize compiled both reductions (about 0.3 s more, cold)."""
    bits = int(_max_magnitude_bits(float_bits(a)))
    if a.itemsize == 4:
        return _magnitude(bits, 23, 127)
    return _magnitude(bits, 52, 1023)


@jit(inline="always")
def _magnitude(bits, mant_bits, bias):
    """The non-negative IEEE float whose bits (sign cleared) are ``bits``, as a
    float64 (no array to view it through: that would allocate); inf for inf
    and NaN."""
    exponent, mantissa = bits >> mant_bits, bits & ((1 << mant_bits) - 1)
    if exponent == 2 * bias + 1:
        return math.inf
    if exponent == 0:  # subnormal
        return math.ldexp(float(mantissa), 1 - bias - mant_bits)
    return math.ldexp(float(mantissa + (1 << mant_bits)), exponent - bias - mant_bits)


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
    # the bias corrections' reciprocals: one division per element, not three (where the
    # reference divides by them: within a rounding of it; 143 -> 103 us at 784 x 256 float32,
    # Emerald Rapids, whose divisions and square roots bound the loop)
    r1 = T(1 / (1 - beta1**t))
    r2 = T(1 / (1 - beta2**t))
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
        pf[i] -= lr_ * (mi * r1) / (math.sqrt(vi * r2) + eps_)
    return p


@jit
def running_mean(acc, g, frac):
    """Same contract as ``fastnet.kernels.numpy.running_mean``."""
    fr = acc.dtype.type(frac)
    af, gf = acc.reshape(-1), g.reshape(-1)
    for i in range(af.size):
        af[i] += fr * (gf[i] - af[i])
    return acc

"""Optimizer updates, the reference (twin: ``fastnet.kernels.numba.optimizers``),
and the bounds that say, before an update, that it cannot overflow.

Why bounds: a step whose loss is finite can still write inf into the weights
(an input of 3e38 gives a finite loss and a gradient that overflows).  The
training paths check each layer's update before applying any, from the
largest magnitudes of what it is made of: the layer's input and dz (a pass
over batch-sized arrays), and bounds on its parameters and optimizer state
that the steps themselves carry forward (no pass over the weights).  An update
is applied only when every value it computes stays below ``big`` (a quarter
of the dtype's largest) and its step below ``limit``: a finite parameter minus
a step below ``limit`` (an eighth of half the spacing of floats at the top of
the range) rounds to a finite number, whatever the parameter is.  So the
check is conservative (it may refuse a step whose result would have been
finite) only where steps reach about 1e30 in float32: a run that has diverged.
"""

import math

import numpy as np

__all__ = ["adam_step", "adam_update_bound", "flush_subnormal", "max_abs", "running_mean",
           "safe_limits", "sgd_step", "sgd_update_bound"]


def max_abs(a):
    """The largest magnitude in ``a`` (0.0 when empty); inf when it holds an inf
    or a NaN (to the update bounds both mean "unsafe")."""
    m = float(np.max(np.abs(a))) if a.size else 0.0
    return m if m == m else math.inf


def safe_limits(dtype):
    """(big, limit) of the update bounds for ``dtype``: a quarter of its largest
    finite value, and an eighth of half the gap between the two largest."""
    info = np.finfo(dtype)
    return float(info.max) / 4, float(info.max) * float(info.eps) / 16


def sgd_update_bound(g_max, gsum_max, p_max, v_max, lr, momentum, weight_decay, nesterov, big, limit):
    """Whether one layer's SGD update (``sgd_step``'s rule, on its w and b) is
    safe, and the bounds after it: ``(safe, p_max, v_max)``.

    g_max : a bound on the gradient's magnitudes; gsum_max : on every partial
    sum the gradient's product forms (B times g_max for a mean over B rows);
    p_max, v_max : bounds on the parameters' and velocities' magnitudes.  Any
    NaN or inf among them makes the update unsafe.  All in float64.
    """
    d = g_max + weight_decay * p_max
    if momentum == 0.0:
        v = v_max
        s = d
    else:
        v = momentum * v_max + d
        s = d + momentum * v if nesterov else v
    step = lr * s
    safe = (gsum_max * max(lr, 1.0) <= big and d <= big and v <= big and s <= big
            and step <= limit)
    return safe, p_max + step, v


def adam_update_bound(g_max, gsum_max, p_max, m_max, v_max, lr, beta1, beta2, eps, weight_decay, t,
                      big, limit):
    """As ``sgd_update_bound``, for ``adam_step``'s rule at step ``t`` (the
    count after this step): ``(safe, p_max, m_max, v_max)``.

    The step's size: when beta1**2 < beta2, |m_hat| / sqrt(v_hat) is at most
    (1 - beta1) sqrt(c2 / (1 - beta2) / (1 - beta1**2 / beta2)) / c1 for every
    element (Cauchy-Schwarz on the two moving averages of the same gradients;
    c1, c2 the bias corrections), doubled here for rounding and for moments
    flushed to zero; otherwise m_hat / eps bounds it.  Both hold for Adam's own
    moments, not for values written into its state by hand.
    """
    d = g_max + weight_decay * p_max
    m = beta1 * m_max + (1.0 - beta1) * d
    v = beta2 * v_max + (1.0 - beta2) * d * d
    c1, c2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
    m_hat = m / c1
    if beta1 * beta1 < beta2:
        ratio = 2.0 * (1.0 - beta1) / c1 * math.sqrt(c2 / (1.0 - beta2) / (1.0 - beta1 * beta1 / beta2))
    else:
        ratio = m_hat / eps
    step = lr * ratio
    safe = (gsum_max * max(lr, 1.0) <= big and d <= big and d * d <= big and m_hat <= big
            and v / c2 <= big and m_hat / eps <= big and lr * m_hat <= big and step <= limit)
    return safe, p_max + step, m, v


def flush_subnormal(a):
    """Set the subnormal values of ``a`` (0 < |a| < the smallest normal float)
    to zero, in place; NaN and inf stay.  Returns ``a``.

    Optimizer state decaying geometrically under a zero gradient (momentum
    0.9 on a dead ReLU unit, Adam's moments) otherwise ends in subnormals,
    where x86 arithmetic is about 100 times slower; and it stays there,
    because 0.9 times the smallest subnormal rounds back to itself (measured:
    a momentum-SGD step of a 784-256-256-10 MLP went from 0.42 to 2.4 ms).
    """
    a[np.abs(a) < np.finfo(a.dtype).tiny] = 0
    return a


def sgd_step(p, g, v, lr, momentum, weight_decay, nesterov):
    """One SGD update of parameter p in place, with optional momentum.

    d = g + weight_decay * p;  v = momentum * v + d, its subnormals flushed to
    zero (see ``flush_subnormal``);
    p -= lr * (d + momentum * v if nesterov else v)   (v = d when momentum = 0).
    p, g : arrays of one shape and dtype; v : the velocity, same shape, updated
    in place (not read when momentum is 0, and may then be empty).  Returns p.
    """
    d = g + weight_decay * p
    if momentum != 0:
        v *= momentum
        v += d
        flush_subnormal(v)
        d = d + momentum * v if nesterov else v
    p -= lr * d
    return p


def adam_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t):
    """One Adam update of parameter p in place (Kingma and Ba, 2015).

    d = g + weight_decay * p;  m = b1 m + (1 - b1) d;  v = b2 v + (1 - b2) d^2
    (m and v with their subnormals flushed to zero, see ``flush_subnormal``);
    p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
    p, g, m, v : arrays of one shape and dtype; m, v updated in place; t >= 1
    is the step number.  Returns p.
    """
    d = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * d
    flush_subnormal(m)
    v *= beta2
    v += (1 - beta2) * d * d
    flush_subnormal(v)
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def running_mean(acc, g, frac):
    """Fold g into a running mean: ``acc += frac * (g - acc)``.

    With ``frac = n / (n_seen + n)`` for a chunk of n samples, acc stays the
    mean over all samples seen, whatever the chunk sizes.  Returns acc.
    """
    acc += frac * (g - acc)
    return acc

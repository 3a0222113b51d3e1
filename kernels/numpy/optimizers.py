"""Optimizer updates, the reference (twin: ``fastnet.kernels.numba.optimizers``)."""

import numpy as np

__all__ = ["adam_step", "flush_subnormal", "running_mean", "sgd_step"]


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

"""A fused plan's layers updated from gradients given whole, checked and applied
in one compiled call (twin: ``fastnet.kernels.numpy.apply``).

Distributed training forms a step's gradients by the fused step's first half
(``fused_gradients``), adds them over the ranks, then updates: here, with the
bounds of every layer's update checked before any is applied, as the fused
step checks its own.  The updates are the optimizers' kernels
(``sgd_step``, ``adam_step``), called by address as the fused step calls
them, so the parameters come out bit for bit as the per-parameter calls
from Python leave them.
"""

import numpy as np

from .cpu import array_at, jit
from .fused import (
    _ONE,
    ADAM,
    LEAVES,
    MB,
    MW,
    N_IN,
    N_OUT,
    SGD_STEP,
    VB,
    VW,
    B,
    W,
    check_adam,
    check_bounds,
    check_grads,
    check_velocities,
    grad_offset,
    layer_bound,
)
from .optimizers import max_abs

__all__ = ["fused_adam_apply", "fused_sgd_apply"]

_call = LEAVES.call


@jit
def compiled_apply(fns, table, grads, adam, lr, momentum, weight_decay, nesterov, bounds, after, big, limit,
                   beta2, eps, step, m_bounds):
    """The update of ``fused_sgd_apply`` (``adam`` False) or ``fused_adam_apply``
    (``momentum`` is beta1), on a plan's table (``fastnet.kernels.numba.fused``)."""
    n_layers = table.shape[0]
    for i in range(n_layers - 1, -1, -1):  # every update checked before any is applied
        at, size, n_out = grad_offset(table, i), table[i, N_IN] * table[i, N_OUT], table[i, N_OUT]
        g_max = max(max_abs(grads[at:at + size]), max_abs(grads[at + size:at + size + n_out]))
        # a gradient given whole: its largest sum is itself
        if not layer_bound(adam, i, g_max, g_max, bounds, m_bounds, after, lr, momentum, weight_decay,
                           nesterov, beta2, eps, step, big, limit):
            return -(i + 1.0)
    for i in range(n_layers):
        n_in, n_out = table[i, N_IN], table[i, N_OUT]
        at, size = grad_offset(table, i), n_in * n_out
        w, b = array_at(table[i, W], n_in, n_out, grads), array_at(table[i, B], _ONE, n_out, grads)
        dw = grads[at:at + size].reshape((n_in, n_out))
        db = grads[at + size:at + size + n_out].reshape((1, n_out))
        if adam:
            mw, vw = array_at(table[i, MW], n_in, n_out, grads), array_at(table[i, VW], n_in, n_out, grads)
            mb, vb = array_at(table[i, MB], _ONE, n_out, grads), array_at(table[i, VB], _ONE, n_out, grads)
            _call(fns, ADAM, 0, (w, dw, mw, vw, lr, momentum, beta2, eps, weight_decay, step))
            _call(fns, ADAM, 0, (b, db, mb, vb, lr, momentum, beta2, eps, weight_decay, step))
        elif momentum != 0:
            vw, vb = array_at(table[i, VW], n_in, n_out, grads), array_at(table[i, VB], _ONE, n_out, grads)
            _call(fns, SGD_STEP, 0, (w, dw, vw, lr, momentum, weight_decay, nesterov))
            _call(fns, SGD_STEP, 0, (b, db, vb, lr, momentum, weight_decay, nesterov))
        else:  # no velocity: the parameter stands in for it, not read (as in the fused step)
            _call(fns, SGD_STEP, 0, (w, dw, w, lr, 0.0, weight_decay, False))
            _call(fns, SGD_STEP, 0, (b, db, b, lr, 0.0, weight_decay, False))
    for i in range(n_layers):
        bounds[i, 0], bounds[i, 1] = after[i, 0], after[i, 1]
    return 0.0


def fused_sgd_apply(plan, grads, lr, momentum, weight_decay, nesterov, bounds):
    """Same contract as ``fastnet.kernels.numpy.fused_sgd_apply``, in one compiled call."""
    check_velocities(plan, momentum)
    return _run(plan, grads, False, lr, momentum, weight_decay, nesterov, bounds, 0.0, 0.0, 0,
                plan.no_m_bounds)


def fused_adam_apply(plan, grads, lr, beta1, beta2, eps, weight_decay, step, bounds, m_bounds):
    """Same contract as ``fastnet.kernels.numpy.fused_adam_apply``, in one compiled call."""
    check_adam(plan, m_bounds, step)
    return _run(plan, grads, True, lr, beta1, weight_decay, False, bounds, beta2, eps, int(step), m_bounds)


def _run(plan, grads, adam, lr, momentum, weight_decay, nesterov, bounds, beta2, eps, step, m_bounds):
    check_grads(plan, grads)
    check_bounds(plan, bounds)
    LEAVES.need(plan.dtype, ADAM if adam else SGD_STEP)
    return compiled_apply(plan.fns, plan.table, grads, adam, float(lr), float(momentum), float(weight_decay),
                          bool(nesterov), bounds, plan.after, *plan.limits, float(beta2), float(eps),
                          np.int64(step), m_bounds)

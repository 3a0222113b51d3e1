"""The whole SGD training step of a stack of dense layers, the reference
(twin: ``fastnet.kernels.numba.fused``): the composition of the other kernels
that the compiled package fuses into one call.
"""

from collections import namedtuple

import numpy as np

from .activations import activation_grad
from .dense import dense_forward, input_grad
from .losses import loss_grad, loss_value
from .optimizers import sgd_step

__all__ = ["fused_plan", "fused_sgd_step"]


FusedPlan = namedtuple("FusedPlan", "ws bs vws vbs kinds alphas as_ ys gs scratch")


def fused_plan(ws, bs, vws, vbs, kinds, alphas, as_, ys, gs, scratch=None):
    """The arrays of one network's fused step, bound once for many steps.

    ws, bs : each layer's w (n_l-1, n_l) and b (1, n_l), updated in place by
    the steps; vws, vbs : their velocities (read and updated only when
    momentum is not 0, else empty arrays); kinds : each layer's activation
    code; alphas : their alpha parameters; as_, ys, gs : (B, n_l) workspaces,
    overwritten by each step with the layer's pre-activation, output and dz.
    Sequences of equal length, one entry per layer.  The plan holds the arrays
    (not copies): a step works on them, for batches of exactly B rows.
    ``scratch``: None, or the ``scratch`` of an earlier plan, which this plan
    reuses when it is large enough (a compiled step's work space; the
    reference needs none, and its plans' ``scratch`` is None).  Returns the
    plan, to pass to ``fused_sgd_step``.
    """
    return FusedPlan(tuple(ws), tuple(bs), tuple(vws), tuple(vbs), tuple(int(k) for k in kinds),
                     tuple(float(a) for a in alphas), tuple(as_), tuple(ys), tuple(gs), None)


def fused_sgd_step(x, t, plan, loss_kind, lr, momentum, weight_decay, nesterov):
    """One SGD training step of a stack of dense layers; returns the batch loss.

    Forward through every layer, the loss and its gradient, then, from the
    last layer down, dz = g * f'(a), the input gradient for the layer below
    (with the weights before their update), and the SGD update of w and b
    (``sgd_step``'s rule).  x : (B, n_0) input; t : (B, C) targets; plan : from
    ``fused_plan``, for this B.  A loss that is not finite is returned before
    anything is updated.
    """
    ws, bs, vws, vbs, kinds, alphas, as_, ys, gs, _ = plan
    n_layers = len(ws)
    inp = x
    for i in range(n_layers):
        dense_forward(inp, ws[i], bs[i], kinds[i], alphas[i], as_[i], ys[i])
        inp = ys[i]
    loss = loss_value(loss_kind, ys[-1], t)
    if not np.isfinite(loss):
        return loss
    loss_grad(loss_kind, ys[-1], t, gs[-1])
    for i in range(n_layers - 1, -1, -1):
        x_i = x if i == 0 else ys[i - 1]
        g = gs[i]
        activation_grad(kinds[i], alphas[i], as_[i], ys[i], g, g)
        dw = x_i.T @ g / x.shape[0]
        db = g.sum(axis=0, keepdims=True) / x.shape[0]
        if i > 0:
            input_grad(g, ws[i], gs[i - 1])
        sgd_step(ws[i], dw, vws[i], lr, momentum, weight_decay, nesterov)
        sgd_step(bs[i], db, vbs[i], lr, momentum, weight_decay, nesterov)
    return loss

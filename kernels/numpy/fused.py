"""The whole training step of a stack of dense layers, SGD or Adam, the
reference (twin: ``fastnet.kernels.numba.fused``): the composition of the
other kernels that the compiled package fuses into one call.
"""

from collections import namedtuple

import numpy as np

from .activations import activation_grad
from .dense import dense_forward, input_grad
from .losses import loss_grad, loss_value
from .optimizers import adam_step, adam_update_bound, max_abs, safe_limits, sgd_step, sgd_update_bound

__all__ = ["fused_adam_step", "fused_gradients", "fused_plan", "fused_sgd_step"]


FusedPlan = namedtuple("FusedPlan", "ws bs vws vbs kinds alphas as_ ys gs scratch mws mbs")


def fused_plan(ws, bs, vws, vbs, kinds, alphas, as_, ys, gs, scratch=None, mws=(), mbs=()):
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
    reference needs none, and its plans' ``scratch`` is None).  ``mws``,
    ``mbs``: Adam's first moments of w and b, empty for SGD (then ``vws``,
    ``vbs`` are Adam's second moments).  Returns the plan, to pass to
    ``fused_sgd_step`` or, with the moments, ``fused_adam_step``.
    """
    return FusedPlan(tuple(ws), tuple(bs), tuple(vws), tuple(vbs), tuple(int(k) for k in kinds),
                     tuple(float(a) for a in alphas), tuple(as_), tuple(ys), tuple(gs), None,
                     tuple(mws), tuple(mbs))


def fused_sgd_step(x, t, plan, loss_kind, lr, momentum, weight_decay, nesterov, bounds, x_max=-1.0):
    """One SGD training step of a stack of dense layers; returns the batch loss.

    Forward through every layer, the loss and its gradient, then, from the
    last layer down, dz = g * f'(a) and the input gradient for the layer
    below (with the weights before any update), then each layer's SGD update
    of w and b (``sgd_step``'s rule).  x : (B, n_0) input; t : (B, C) targets;
    plan : from ``fused_plan``, for this B.  bounds : (layers, 2) float64,
    bounds on each layer's parameters' and velocities' magnitudes (see
    ``sgd_update_bound``), updated when the step is applied.  x_max : a bound
    on x's magnitudes the caller knows (its check of x found it), or a
    negative number: x is scanned for it then.

    Nothing is updated when the loss is not finite (it is returned), nor when
    the update of a layer l is not safe (``sgd_update_bound``): then
    ``-(l + 1)`` is returned, which no loss is.
    """
    return _step(x, t, plan, loss_kind, bounds, x_max, *sgd_rule(plan, lr, momentum, weight_decay, nesterov,
                                                                 bounds))


def sgd_rule(plan, lr, momentum, weight_decay, nesterov, bounds):
    """SGD's ``(bound, update)`` on ``plan``'s layers: ``bound(layer, g_max,
    sums) -> (safe, bounds after)`` and ``update(layer, is_bias, parameter,
    gradient)`` (the fused step's, and ``apply``'s)."""
    def bound(i, g_max, sums):
        safe, p, v = sgd_update_bound(g_max, sums, bounds[i, 0], bounds[i, 1], lr, momentum, weight_decay,
                                      nesterov, *safe_limits(plan.ws[0].dtype))
        return safe, (p, v)

    def update(i, bias, p, g):
        sgd_step(p, g, (plan.vbs if bias else plan.vws)[i], lr, momentum, weight_decay, nesterov)

    return bound, update


def fused_adam_step(x, t, plan, loss_kind, lr, beta1, beta2, eps, weight_decay, step, bounds, m_bounds,
                    x_max=-1.0):
    """One Adam training step (``adam_step``'s rule, at step count ``step``, the
    count after this step) of a stack of dense layers, as ``fused_sgd_step``
    is of SGD, on a plan with the moments: ``mws``, ``mbs`` the first,
    ``vws``, ``vbs`` the second.  ``bounds``: each layer's bounds on its
    parameters' and second moments' magnitudes; ``m_bounds`` (layers,)
    float64: on its first moments' (``adam_update_bound``), each raised to
    the bound after this step even when the step is refused (a bound either
    way).  The caller keeps the step count."""
    return _step(x, t, plan, loss_kind, bounds, x_max,
                 *adam_rule(plan, lr, beta1, beta2, eps, weight_decay, step, bounds, m_bounds))


def adam_rule(plan, lr, beta1, beta2, eps, weight_decay, step, bounds, m_bounds):
    """Adam's ``(bound, update)`` on ``plan``'s layers, as ``sgd_rule``; the
    bound raises ``m_bounds`` (a bound either way)."""
    def bound(i, g_max, sums):
        safe, p, m, v = adam_update_bound(g_max, sums, bounds[i, 0], m_bounds[i], bounds[i, 1], lr, beta1,
                                          beta2, eps, weight_decay, step, *safe_limits(plan.ws[0].dtype))
        m_bounds[i] = max(m_bounds[i], m)
        return safe, (p, v)

    def update(i, bias, p, g):
        m, v = (plan.mbs[i], plan.vbs[i]) if bias else (plan.mws[i], plan.vws[i])
        adam_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)

    return bound, update


def fused_gradients(x, t, plan, loss_kind, grad_scale, grads):
    """The gradients of one step, as ``fused_sgd_step`` forms them, scaled by
    ``grad_scale`` and written into ``grads`` (1-D, the plan's dtype) in
    parameter order, each flattened: [dw0, db0, dw1, db1, ...]; the parameters
    are not touched.  Returns the batch loss; when it is not finite, no
    gradient is written.  (Distributed training reduces ``grads`` over the
    ranks, then updates.)"""
    loss = _backward(x, t, plan, loss_kind)
    if not np.isfinite(loss):
        return loss
    at, batch = 0, x.shape[0]
    for i, (w, g) in enumerate(zip(plan.ws, plan.gs, strict=True)):
        x_i = x if i == 0 else plan.ys[i - 1]
        grads[at:at + w.size] = (grad_scale * (x_i.T @ g / batch)).reshape(-1)
        at += w.size
        grads[at:at + g.shape[1]] = grad_scale * (g.sum(axis=0) / batch)
        at += g.shape[1]
    return loss


def _backward(x, t, plan, loss_kind):
    """Forward, the loss, and every layer's dz (in ``plan.gs``); returns the loss,
    and stops before the gradients when it is not finite."""
    ws, bs, _, _, kinds, alphas, as_, ys, gs, _, _, _ = plan
    inp = x
    for i in range(len(ws)):
        dense_forward(inp, ws[i], bs[i], kinds[i], alphas[i], as_[i], ys[i])
        inp = ys[i]
    loss = loss_value(loss_kind, ys[-1], t)
    if not np.isfinite(loss):
        return loss
    loss_grad(loss_kind, ys[-1], t, gs[-1])
    for i in range(len(ws) - 1, -1, -1):
        activation_grad(kinds[i], alphas[i], as_[i], ys[i], gs[i], gs[i])
        if i > 0:
            input_grad(gs[i], ws[i], gs[i - 1])
    return loss


def _step(x, t, plan, loss_kind, bounds, x_max, bound, update):
    """The step of both: forward, loss, every dz, every layer's bound
    (``bound(layer, g_max, sums) -> (safe, bounds after)``), then the updates
    (``update(layer, is_bias, parameter, gradient)``)."""
    ws, bs, ys, gs = plan.ws, plan.bs, plan.ys, plan.gs
    n_layers, batch = len(ws), x.shape[0]
    loss = _backward(x, t, plan, loss_kind)
    if not np.isfinite(loss):
        return loss
    after = np.empty_like(bounds)
    for i in range(n_layers - 1, -1, -1):
        in_max = x_max if i == 0 and x_max >= 0 else max_abs(x if i == 0 else ys[i - 1])
        g_max = max_abs(gs[i]) * max(in_max, 1.0)
        safe, after[i] = bound(i, g_max, batch * g_max)
        if not safe:
            return -(i + 1.0)
    for i in range(n_layers - 1, -1, -1):
        x_i, g = (x if i == 0 else ys[i - 1]), gs[i]
        update(i, False, ws[i], x_i.T @ g / batch)
        update(i, True, bs[i], g.sum(axis=0, keepdims=True) / batch)
    bounds[...] = after
    return loss

"""A fused plan's layers updated from gradients given whole, the reference
(twin: ``fastnet.kernels.numba.apply``): distributed training's update after
the ranks' gradients (``fused_gradients``) have been added."""

from .fused import adam_rule, sgd_rule
from .optimizers import max_abs

__all__ = ["fused_adam_apply", "fused_sgd_apply"]


def fused_sgd_apply(plan, grads, lr, momentum, weight_decay, nesterov, bounds):
    """SGD's update (``sgd_step``'s rule) of every layer of ``plan`` (from
    ``fused_plan``) from ``grads``, a 1-D buffer in ``fused_gradients``'
    layout ([dw0, db0, dw1, db1, ...], each flattened; anything past them
    ignored).  Every layer's update is checked first (``sgd_update_bound``,
    with the gradient's largest magnitude as its bound and its sum, as for a
    gradient given whole): when layer l's is not safe nothing is changed and
    ``-(l + 1)`` is returned; else every layer is updated, ``bounds`` set to
    the bounds after (as ``fused_sgd_step`` sets them) and 0.0 returned."""
    return _apply(plan, grads, bounds, *sgd_rule(plan, lr, momentum, weight_decay, nesterov, bounds))


def fused_adam_apply(plan, grads, lr, beta1, beta2, eps, weight_decay, step, bounds, m_bounds):
    """Adam's update (``adam_step``'s rule, at step count ``step``, the count
    after this step) from ``grads``, as ``fused_sgd_apply`` is SGD's, on a plan
    with the moments; ``bounds`` and ``m_bounds`` as in ``fused_adam_step``
    (each of ``m_bounds`` raised to its bound after this step even when the
    update is refused).  The caller keeps the step count."""
    return _apply(plan, grads, bounds, *adam_rule(plan, lr, beta1, beta2, eps, weight_decay, step, bounds,
                                                  m_bounds))


def _apply(plan, grads, bounds, bound, update):
    """Both: every layer's bound (``sgd_rule``), from the last down, then the updates."""
    views, at = [], 0
    for w, b in zip(plan.ws, plan.bs, strict=True):
        dw = grads[at:at + w.size].reshape(w.shape)
        db = grads[at + w.size:at + w.size + b.size].reshape(b.shape)
        views.append((dw, db))
        at += w.size + b.size
    after = bounds.copy()
    for i in range(len(views) - 1, -1, -1):
        g_max = max(max_abs(views[i][0]), max_abs(views[i][1]))
        safe, after[i] = bound(i, g_max, g_max)  # a gradient given whole: its largest sum is itself
        if not safe:
            return -(i + 1.0)
    for i, (dw, db) in enumerate(views):
        update(i, False, plan.ws[i], dw)
        update(i, True, plan.bs[i], db)
    bounds[...] = after
    return 0.0

"""Many minibatch steps of ``fit`` in one call, the reference (twin:
``fastnet.kernels.numba.epoch``): the fused step of each batch in turn, the
batches gathered from the data set in a given order, the loss and the correct
predictions summed on the way.
"""

import math

import numpy as np

from .fused import fused_adam_step, fused_sgd_step

__all__ = ["fused_adam_epoch", "fused_sgd_epoch"]



def correct(kind, out, t):
    """The number of correct predictions of outputs ``out`` for targets ``t``
    (``fastnet.kernels.ACCURACIES[kind]``), as a float."""
    if kind == 1:
        return float(np.count_nonzero(out.argmax(axis=1) == t.argmax(axis=1)))
    if kind == 2:
        return np.count_nonzero((out > 0) == (t >= 0.5)) / out.shape[1]
    return 0.0


def fused_sgd_epoch(X, T, order, start, n_steps, xbuf, tbuf, plan, loss_kind, accuracy_kind, lr, momentum,
                    weight_decay, nesterov, bounds, x_max, totals):
    """``n_steps`` steps of ``fused_sgd_step`` on ``plan``: step j on the rows
    ``order[start + j B : start + (j + 1) B]`` of ``X`` and ``T`` (B: the plan's
    batch, the rows of ``xbuf`` and ``tbuf``, which the rows are gathered into
    first), with the other arguments as there (``x_max`` bounds every row of X).

    Returns ``(steps applied, 0.0)``, or ``(j, what step j returned)`` when
    step j was not applied (its loss not finite, or an update refused: see
    ``fused_sgd_step``): the steps before it are applied, xbuf and tbuf hold
    its batch.  ``totals``, (3,) float64, gains each applied step's loss times
    B, its number of correct predictions (``accuracy_kind``, an index of
    ``fastnet.kernels.ACCURACIES``), from the outputs before its update, and
    1 (the steps applied so far: known even where the call is interrupted).
    """
    def step(j):
        return fused_sgd_step(xbuf, tbuf, plan, loss_kind, lr, momentum, weight_decay, nesterov, bounds,
                              x_max)

    return _epoch(X, T, order, start, n_steps, xbuf, tbuf, plan, accuracy_kind, totals, step)


def fused_adam_epoch(X, T, order, start, n_steps, xbuf, tbuf, plan, loss_kind, accuracy_kind, lr, beta1,
                     beta2, eps, weight_decay, step, bounds, m_bounds, x_max, totals):
    """As ``fused_sgd_epoch``, of ``fused_adam_step``: step j at step count
    ``step + j`` (``step``: the count after the first)."""
    def one(j):
        return fused_adam_step(xbuf, tbuf, plan, loss_kind, lr, beta1, beta2, eps, weight_decay, step + j,
                               bounds, m_bounds, x_max)

    return _epoch(X, T, order, start, n_steps, xbuf, tbuf, plan, accuracy_kind, totals, one)


def _epoch(X, T, order, start, n_steps, xbuf, tbuf, plan, accuracy_kind, totals, step):
    batch = xbuf.shape[0]
    for j in range(n_steps):
        rows = order[start + j * batch:start + (j + 1) * batch]
        np.take(X, rows, axis=0, out=xbuf)
        np.take(T, rows, axis=0, out=tbuf)
        loss = step(j)
        if not (loss >= 0 and math.isfinite(loss)):
            return j, float(loss)
        totals[0] += float(loss) * batch
        totals[1] += correct(accuracy_kind, plan.ys[-1], tbuf)
        totals[2] += 1
    return n_steps, 0.0

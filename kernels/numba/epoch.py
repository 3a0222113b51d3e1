"""Many minibatch steps of ``fit`` in one compiled call (twin:
``fastnet.kernels.numpy.epoch``).

``compiled_epoch`` gathers each batch's rows into the plan's input buffers
and calls the fused step (``fused.STEPS``) through its address, so
the step is not compiled a second time inside the loop; the loss and the
correct predictions are summed in the loop.  One call takes as many steps as
its caller asks: ``fit`` asks for about a fifth of a second's worth, so its
progress bar moves and Ctrl-C stops it between calls.
"""

import math

import numpy as np
from numba import types

from .. import ACCURACIES
from .cpu import Leaves, array_at, jit
from .dense import copy_row
from .fused import ADAM, N_OUT, STEPS, Y, check_adam, ready, sgd_update, step_code, step_signature

__all__ = ["fused_adam_epoch", "fused_sgd_epoch"]

STEP = Leaves((STEPS, step_signature))


def epoch_args(dt):
    """``compiled_epoch``'s argument types for arrays of ``dt`` (a numba float type), as ``_run`` calls it."""
    m, i64 = types.Array(dt, 2, "C"), types.int64
    return (m, m, types.Array(i64, 1, "C"), i64, i64, m, m, i64, types.Array(types.float64, 1, "C"),
            types.Array(i64, 1, "C"), i64, *step_signature(dt).args[2:])
_step_call = STEP.call


@jit(inline="always")
def _correct(kind, out, t):
    """The number of correct predictions (``fastnet.kernels.numpy.epoch.correct``);
    argmax ties go to the first, as NumPy's."""
    if kind == 1:
        n = 0.0
        for r in range(out.shape[0]):
            a = b = 0
            for j in range(1, out.shape[1]):
                if out[r, j] > out[r, a]:
                    a = j
                if t[r, j] > t[r, b]:
                    b = j
            if a == b:
                n += 1.0
        return n
    if kind == 2:
        c = 0
        for r in range(out.shape[0]):
            for j in range(out.shape[1]):
                if (out[r, j] > 0) == (t[r, j] >= 0.5):
                    c += 1
        return c / out.shape[1]
    return 0.0


@jit
def compiled_epoch(X, T, order, start, n_steps, xbuf, tbuf, accuracy_kind, totals, step_fns,
                   step_kernel, fns, table, alphas, scratch, codes, loss_kind, update, lr, momentum,
                   weight_decay, nesterov, bounds, after, big, limit, gemm, wide, work, x_max, beta2, eps,
                   step, m_bounds):
    """The loop of ``fused_sgd_epoch`` and ``fused_adam_epoch``: it calls
    ``fused.STEPS[step_kernel]`` through ``step_fns`` (``STEP.table(dtype)``),
    and the arguments after those two are that step's, but x and t."""
    batch, n_layers = xbuf.shape[0], table.shape[0]
    out = array_at(table[n_layers - 1, Y], batch, table[n_layers - 1, N_OUT], xbuf)
    for j in range(n_steps):
        first = start + j * batch
        for r in range(batch):
            row = order[first + r]
            copy_row(X[row], xbuf[r])
            copy_row(T[row], tbuf[r])
        loss = _step_call(step_fns, 0, step_kernel,
                          (xbuf, tbuf, fns, table, alphas, scratch, codes, loss_kind, update, lr, momentum,
                           weight_decay, nesterov, bounds, after, big, limit, gemm, wide, work, x_max, beta2,
                           eps, step + j, m_bounds))
        if not (loss >= 0.0 and math.isfinite(loss)):
            return j, loss
        totals[0] += float(loss) * batch  # float64, as the per-step loop sums (also interpreted)
        totals[1] += _correct(accuracy_kind, out, tbuf)
        totals[2] += 1
    return n_steps, 0.0


def fused_sgd_epoch(X, T, order, start, n_steps, xbuf, tbuf, plan, loss_kind, accuracy_kind, lr, momentum,
                    weight_decay, nesterov, bounds, x_max, totals):
    """Same contract as ``fastnet.kernels.numpy.fused_sgd_epoch``, in one compiled call."""
    update = sgd_update(plan, momentum, weight_decay)
    return _run(X, T, order, start, n_steps, xbuf, tbuf, plan, loss_kind, accuracy_kind, update, lr, momentum,
                weight_decay, nesterov, bounds, x_max, 0.0, 0.0, 0, plan.no_m_bounds, totals)


def fused_adam_epoch(X, T, order, start, n_steps, xbuf, tbuf, plan, loss_kind, accuracy_kind, lr, beta1,
                     beta2, eps, weight_decay, step, bounds, m_bounds, x_max, totals):
    """Same contract as ``fastnet.kernels.numpy.fused_adam_epoch``, in one compiled call."""
    check_adam(plan, m_bounds, step)
    return _run(X, T, order, start, n_steps, xbuf, tbuf, plan, loss_kind, accuracy_kind, ADAM, lr, beta1,
                weight_decay, False, bounds, x_max, beta2, eps, int(step), m_bounds, totals)


def _rows(arr, name, width, dtype):
    if not (type(arr) is np.ndarray and arr.ndim == 2 and arr.shape[1] == width and arr.dtype == dtype
            and arr.flags.c_contiguous and arr.flags.writeable):
        raise ValueError(f"{name} must be a writeable C-contiguous {dtype} array of {width} columns, "
                         f"got {arr!r:.80}")


def _run(X, T, order, start, n_steps, xbuf, tbuf, plan, loss_kind, accuracy_kind, update, lr, momentum,
         weight_decay, nesterov, bounds, x_max, beta2, eps, step, m_bounds, totals):
    """Every array the loop indexes checked, the kernels made ready, and the call."""
    batch, dtype = plan.x_shape[0], plan.dtype
    _rows(X, "X", plan.x_shape[1], dtype)
    _rows(T, "T", plan.t_shape[1], dtype)
    if X.shape[0] != T.shape[0]:
        raise ValueError(f"X and T must have the same rows, got {X.shape[0]} and {T.shape[0]}")
    for name, buf, shape in (("xbuf", xbuf, plan.x_shape), ("tbuf", tbuf, plan.t_shape)):
        _rows(buf, name, shape[1], dtype)
        if buf.shape != shape:
            raise ValueError(f"{name} must have the plan's shape {shape}, got {buf.shape}")
    if not (type(order) is np.ndarray and order.ndim == 1 and order.dtype == np.int64
            and order.flags.c_contiguous):
        raise ValueError(f"order must be a C-contiguous int64 array of row indices, got {order!r:.80}")
    if (isinstance(start, (bool, np.bool_)) or isinstance(n_steps, (bool, np.bool_))
            or not isinstance(start, (int, np.integer)) or not isinstance(n_steps, (int, np.integer))
            or start < 0 or n_steps < 0 or start + n_steps * batch > order.size):
        raise ValueError(f"{n_steps!r:.20} steps of {batch} rows from {start!r:.20} do not fit in an order "
                         f"of {order.size} rows")
    used = order[start:start + n_steps * batch]
    if used.size and (used.min() < 0 or used.max() >= X.shape[0]):
        raise ValueError(f"order must index the {X.shape[0]} rows of X, got indices from {used.min()} to "
                         f"{used.max()}")
    if not (type(totals) is np.ndarray and totals.shape == (3,) and totals.dtype == np.float64
            and totals.flags.writeable):
        raise ValueError(f"totals must be a writeable float64 array of shape (3,), got {totals!r:.80}")
    if not 0 <= accuracy_kind < len(ACCURACIES):
        raise ValueError(f"accuracy_kind must index fastnet.kernels.ACCURACIES {ACCURACIES}, got "
                         f"{accuracy_kind!r}")
    ready(plan, loss_kind, update, nesterov, bounds)
    after = plan.after
    kernel = step_code(update, plan.gemm[0] != 0)
    STEP.need(dtype, 0, kernel)
    done, code = compiled_epoch(X, T, order, int(start), int(n_steps), xbuf, tbuf, int(accuracy_kind),
                                totals, STEP.table(dtype), kernel, plan.fns, plan.table, plan.alphas,
                                plan.scratch, plan.codes, loss_kind, update, lr, momentum, weight_decay,
                                nesterov, bounds, after, *plan.limits, *plan.gemm, plan.work, float(x_max),
                                beta2, eps, step, m_bounds)
    return int(done), float(code)

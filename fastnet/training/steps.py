"""A training step on validated data and checked state: the fused path's one
compiled call, or the layered path's passes and the optimizer's update."""

import contextlib
import math
import numbers

import numpy as np

from fastnet.optimizers import Adam
from fastnet.training.paths import execution_plan, plan, products_by_blas
from fastnet.training.state import made_state, refuse_update

_NOTHING = contextlib.nullcontext()


def compiling_ahead(net, batch, keep_grads=False):
    """The block a ``train_step`` or ``fit`` of ``net`` on batches of ``batch``
    rows runs in.  Before this process's first fused step of the network's
    dtype, optimizer and product path (its kernel not yet compiled or loaded
    here), the fused step's ``Aside`` (``fastnet.kernels.numba.fused.step_aside``):
    in a cold process, the helper process that will compile the step's leaves
    then starts, and sets itself up, while the step's own checks of its state
    and batch compile (``max_abs``, ``check_and_one_hot``).  Otherwise, and
    when ``batch`` is not a positive int or the network's state is broken (the
    checks to come will say so), a block that does nothing; it raises nothing."""
    if keep_grads or net.backend != "numba" or not isinstance(batch, numbers.Integral) or batch < 1:
        return _NOTHING
    try:  # the state is not checked yet: what is wrong with it is left to the checks, which name it
        dtype, fused = net.dtype, net.kernels.fused
        if dtype not in (np.float32, np.float64) or plan(net, batch)[0] != "fused":
            return _NOTHING
        return fused.step_aside(dtype, fused.ADAM if type(net.optimizer) is Adam else 0,
                                products_by_blas(net, batch), checks_first=True) or _NOTHING
    except Exception:
        return _NOTHING


def train_batch(net, x, t, where, keep_grads=False, x_max=None):
    """One update on validated data and checked state (``NeuralNetwork._checked``:
    by ``train_step`` before each step, by ``fit`` before its first), on the
    path ``plan`` picks; returns the batch's loss (a float).  ``where`` names
    the step in errors; ``x_max``: a bound on x's magnitudes, when known."""
    state = made_state(net)  # the first step: its input was valid, so it is applied
    path, plan, buffers = ("layered", None, None) if keep_grads else execution_plan(net, x.shape[0], state)
    if path == "fused":
        return fused_step(net, state, x, t, where, plan, buffers, x_max)
    loss = forward_backward(net, x, t, where)
    state.apply(net, net.gradients(), where, state.grad_bounds(net, x_max), x.shape[0],
                lambda: state.grad_bounds(net))
    return loss


def fused_step(net, state, x, t, where, plan, buffers, x_max=None):
    """The fused step: one compiled call (``fused_sgd_step`` or ``fused_adam_step``)
    on ``state``, ``net``'s ``StepState``."""
    opt, k, code = net.optimizer, net.kernels, net.loss.code
    bounds, m_bounds = state.bounds, state.m_bounds
    show_fused(net, x, buffers)
    if type(opt) is Adam:
        step = opt.next_t()

        def run(exact):  # exact: x scanned for its own bound
            return k.fused_adam_step(x, t, plan, code, opt.lr, opt.beta1, opt.beta2, opt.eps,
                                     opt.weight_decay, step, bounds, m_bounds,
                                     -1.0 if exact or x_max is None else x_max)
    else:
        step = None

        def run(exact):
            return k.fused_sgd_step(x, t, plan, code, opt.lr, opt.momentum, opt.weight_decay,
                                    bool(opt.nesterov and opt.momentum != 0), bounds,
                                    -1.0 if exact or x_max is None else x_max)
    loss = float(_refused_twice(net, state, run, where))
    check_loss(loss, where)  # the kernel returns a non-finite loss before any update
    _count(opt, step)
    return loss


def _refused_twice(net, state, run, where, g_max=lambda i: None):
    """``run(exact)``, a compiled update that returns -(l + 1) when layer l's
    update is refused (nothing applied), once on the bounds carried forward;
    when refused, once more on exact ones (``exact`` True), and a refusal
    then stands: ``FloatingPointError`` naming ``where`` and the layer (and
    ``g_max(layer)``, its gradient's bound, when known).  Returns run's value."""
    out = run(False)
    if out < 0:
        state.exact_bounds(net)  # in place: run reads the same arrays
        out = run(True)
        if out < 0:
            i = int(-out) - 1
            refuse_update(where, i, g_max(i), net.dtype)
    return out


def _count(opt, step):
    """An update applied: Adam counts it (``step``; None for SGD), set as no
    change the checks look at (see ``fastnet._changes``)."""
    if step is not None:
        dict.__setitem__(opt.state, "t", step)


def gradients_into(net, x, t, where, grad_scale, flat):
    """The step's gradients alone, times ``grad_scale``, into ``flat`` (1-D, in
    parameter order: [dw0, db0, dw1, db1, ...]), on validated data and checked
    state: by the fused step's compiled first half where ``plan`` says
    "fused" (one call), else by the layered passes, which write them where
    the layers' ``gradients_into`` put them (``flat``'s views, distributed
    training's reduction buffer).  Returns the loss; raises
    ``FloatingPointError`` naming ``where`` when it is not finite, before any
    gradient is written.  Nothing else changes."""
    path, plan, buffers = ("layered", None, None)
    if net.optimizer.state is not None:  # a plan is made from the state: the first step is layered
        path, plan, buffers = execution_plan(net, x.shape[0])
    if path != "fused":
        return forward_backward(net, x, t, where, grad_scale)
    loss = float(net.kernels.fused_gradients(x, t, plan, net.loss.code, grad_scale, flat))
    check_loss(loss, where)
    show_fused(net, x, buffers, gradients=True)  # dw and db: the views of flat, as after the layered passes
    return loss


def show_fused(net, x, buffers, gradients=False):
    """Point the layers' x, a, y and dz at a fused step's arrays for input x (a
    layered pass since may have moved them); dw, db and dx are None (the
    fused path does not form them), or with ``gradients`` dw and db the
    arrays the layers' ``gradients_into`` gave (``fused_gradients`` wrote them)."""
    inp = x
    for layer, (a, y, dz) in zip(net.layers, buffers, strict=True):
        layer._show_pass(inp, a, y, dz, gradients)
        inp = y


def apply_gradients(net, grads, where, flat=None, batch=None):
    """The optimizer's update from gradients given whole (one array per
    parameter, in parameter order: an epoch's mean, or the ranks' reduced
    ones), on checked state, once every layer's update is known to be safe
    (``FloatingPointError`` naming ``where`` otherwise, nothing changed).

    ``flat``, ``batch``: when ``grads`` are the views of one 1-D buffer, in
    ``fused_gradients``' layout (distributed training's reduced buffer; not
    checked: the update reads ``flat``, a refusal's message ``grads``), and
    the execution plan for ``batch`` rows is fused, one compiled call checks
    and applies the update (``fused_sgd_apply``, ``fused_adam_apply``: the
    same kernels, the same parameters bit for bit); else the optimizer's
    kernels, parameter by parameter, from Python."""
    k = net.kernels
    if flat is not None and not isinstance(batch, int):
        raise TypeError(f"apply_gradients: a flat buffer needs the batch size whose plan to use, got "
                        f"{batch!r}")
    if flat is not None and net.optimizer.state is not None:  # a plan is made from the state
        path, plan, _ = execution_plan(net, batch)
        if path == "fused":
            return _apply_fused(net, plan, grads, flat, where)
    g_maxes = [max(k.max_abs(grads[2 * i]), k.max_abs(grads[2 * i + 1])) for i in range(len(grads) // 2)]
    made_state(net).apply(net, grads, where, g_maxes, 1)  # full-batch mode's first update makes it


def _apply_fused(net, plan, grads, flat, where):
    opt, k, state = net.optimizer, net.kernels, net.step_state
    if type(opt) is Adam:
        step = opt.next_t()

        def run(exact):  # the bounds are the state's, exact or not
            return k.fused_adam_apply(plan, flat, opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay,
                                      step, state.bounds, state.m_bounds)
    else:
        step = None

        def run(exact):
            return k.fused_sgd_apply(plan, flat, opt.lr, opt.momentum, opt.weight_decay,
                                     bool(opt.nesterov and opt.momentum != 0), state.bounds)
    _refused_twice(net, state, run, where,
                   lambda i: max(k.max_abs(grads[2 * i]), k.max_abs(grads[2 * i + 1])))
    _count(opt, step)


def forward_loss(net, x, t, where):
    """Forward and loss on validated data: (loss as a float, the per-sample
    loss gradient).  A loss that is not finite raises ``FloatingPointError``
    naming ``where`` before any parameter gradient exists."""
    out = net._forward(x)
    dout = net.step_state.workspace("dout", out.shape[0], out.shape[1])
    loss = float(net.kernels.loss_and_grad(net.loss.code, out, t, dout))
    check_loss(loss, where)
    return loss, dout


def forward_backward(net, x, t, where, grad_scale=1.0):
    """Forward, loss and backward on validated data; returns the loss (a float).

    A loss that is not finite raises ``FloatingPointError`` naming ``where``
    before the backward pass, so no gradient of a diverged step exists.
    ``grad_scale`` multiplies the loss gradient, and so every gradient of the
    backward pass, which is linear in it (distributed training weights each
    rank's gradients by its share of the global batch this way).
    """
    loss, dout = forward_loss(net, x, t, where)
    if grad_scale != 1.0:
        dout *= grad_scale
    net._backward(dout)
    return loss


def check_loss(loss, where):
    """``FloatingPointError`` naming ``where`` when the loss is not finite."""
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"training diverged: the loss is {loss} {where}; that step's update was not "
            "applied. Try a smaller learning rate or check the data."
        )

"""The whole SGD training step of a stack of dense layers in one compiled call
(twin: ``fastnet.kernels.numpy.fused``).

The step is a composition of separately compiled kernels, called by address
(``cpu.Leaves``): the forward pass and the input gradient of ``dense``, the
activations and their gradients, the loss with its gradient, and the
updates below, which apply SGD to w straight from ``x.T @ g`` without writing
``dw``.  The layers reach it as a table of addresses and widths
(``fused_plan``), not as tuples of arrays: numba compiles a function again for
every length of a tuple argument, so a network of a new depth would have cost
a new compile (3.3 s on Emerald Rapids), and typing the tuples cost 2.6-3.4 us
of every call.  One signature per dtype serves every depth.

Past ``tuning.fused_by_blas``'s batch sizes the step (its ``_blas`` kernel,
of the same source) takes BLAS's products instead of the tiles' (``blas``:
NumPy's OpenBLAS, called from the compiled step by address), with one pass
after each product: bias and
activation after ``x @ w``, activation gradient and bias gradient before the
weight-gradient product, and the update folded into that product where it
can be (``STEPS``).  Against the layered path it replaced (each
layer's products and passes called from Python), 784-256-256-10 MLP, plain
SGD, Emerald Rapids, side by side: 1.26x faster at B = 32, 1.23x at 64, 1.09x
at 256, 1.05x at 1024 (``benchmarks/jit_vs_numpy.py --baseline``, the run in the
README's table).

The step is the largest kernel of all (1.5 s of a cold fused-64's 4 s of
compiling on Emerald Rapids; its leaves are the rest): on a cold cache with
a core to spare, ``ready`` compiles the step and then the leaves from the
last, while a helper process compiles them from the first (``aside.Aside``),
and loads the helper's from the cache; ``train_step`` and ``fit`` open the
same block before the step's checks (``step_aside``), so that in a cold
process the helper's set-up runs beside them.
"""

import contextlib
import functools
import math

import numpy as np
from numba import types

from .activations import BACKWARD_IN_PLACE, FORWARD
from .aside import Aside, have
from .blas import address as blas_address
from .blas import axpy_address, matmul
from .cpu import DISABLED, Leaves, array_at, by_code, data_address, jit
from .dense import (
    FORWARD_ROWS,
    INPUT_GRAD_SMALL,
    forward_rows_code,
    forward_tiles,
    input_grad_code,
    padded_size,
    rows_alias,
    update_tiled,
    update_tiled_unaliased,
)
from .losses import LOSS_AND_GRAD
from .optimizers import (
    adam_step,
    adam_update_bound,
    max_abs,
    safe_limits,
    sgd_step,
    sgd_update_bound,
)
from .tuning import MOMENTUM_FLUSH_EVERY, UPDATE_TILES_MIN_BATCH, fused_by_blas
from .updates import (
    UPDATE_ROWS_MOMENTUM,
    UPDATE_ROWS_PLAIN,
    axpy_apply,
    momentum_apply,
    rows_code,
    update_bias_momentum,
    update_bias_plain,
)

__all__ = ["fused_adam_step", "fused_gradients", "fused_plan", "fused_sgd_step"]


# -- the step ----------------------------------------------------------------------------------------
def _m(dt):
    return types.Array(dt, 2, "C")


def _v(dt):
    return types.Array(dt, 1, "C")


LEAVES = Leaves(
    (forward_tiles, lambda dt: types.none(_m(dt), _m(dt), _m(dt), _m(dt))),
    (FORWARD_ROWS, lambda dt: types.none(_m(dt), _m(dt), _m(dt), _m(dt))),
    (FORWARD, lambda dt: types.none(_m(dt), types.float64, _m(dt), _m(dt), types.boolean)),
    (LOSS_AND_GRAD, lambda dt: dt(_m(dt), _m(dt), _m(dt))),
    (BACKWARD_IN_PLACE, lambda dt: types.none(types.float64, _m(dt), _m(dt), _m(dt), _m(dt), _m(dt),
                                              types.boolean)),
    (INPUT_GRAD_SMALL, lambda dt: types.none(_m(dt), _m(dt), _m(dt))),
    # code 0: no row of x, g or w aliases; 1: some do (the table's ALIASED column)
    ((update_tiled_unaliased, update_tiled), lambda dt: types.none(_m(dt), _m(dt), _m(dt), dt, _v(dt))),
    (UPDATE_ROWS_PLAIN, lambda dt: types.none(_m(dt), _m(dt), _m(dt), dt, dt, _v(dt))),
    (UPDATE_ROWS_MOMENTUM, lambda dt: types.none(_m(dt), _m(dt), _m(dt), _m(dt), dt, dt, dt, types.boolean,
                                                 _v(dt))),
    (update_bias_plain, lambda dt: types.none(_m(dt), _m(dt), dt, dt, _v(dt))),
    (update_bias_momentum, lambda dt: types.none(_m(dt), _m(dt), _m(dt), dt, dt, dt, types.boolean, _v(dt))),
    # the updates after a product by BLAS (``blas``): of dw, and of v formed in place
    (sgd_step, lambda dt: _m(dt)(_m(dt), _m(dt), _m(dt), types.float64, types.float64, types.float64,
                                 types.boolean)),
    (momentum_apply, lambda dt: types.none(_m(dt), _m(dt), dt, dt)),
    (axpy_apply, lambda dt: types.none(types.int64, types.boolean, _m(dt), _m(dt), dt, dt)),
    # Adam's update of a parameter from its gradient, formed whole in ``work``
    (adam_step, lambda dt: _m(dt)(_m(dt), _m(dt), _m(dt), _m(dt), types.float64, types.float64, types.float64,
                                  types.float64, types.float64, types.int64)),
    # the bounds' checks, compiled already for the checks of the batch: called, not
    # linked in, where the step's module would optimise and compile its code again
    (max_abs, lambda dt: types.float64(_m(dt))),
)
(FWD_TILES, FWD_ROWS, ACT, LOSS, ACT_GRAD, DX, UPD_TILED, UPD_PLAIN, UPD_MOMENTUM, BIAS_PLAIN,
 BIAS_MOMENTUM, SGD_STEP, MOMENTUM_APPLY, AXPY_APPLY, ADAM, MAX_ABS) = range(len(LEAVES.entries))
_call = LEAVES.call
# The columns of a plan's table, one row per layer: the addresses of w, b, their
# velocities (Adam: second moments), and the workspaces a, y and g (dz); the
# layer's inputs, outputs, activation code, whether its rows alias
# (``dense.rows_alias``, 1 or 0), where its bias gradient starts in ``work``
# (products by BLAS, and Adam), and the addresses of Adam's first moments of w and b.
W, B, VW, VB, A, Y, G, N_IN, N_OUT, KIND, ALIASED, DB, MW, MB = range(14)
_ONE = np.intp(1)  # not the constant 1: numba would type it as a Literal (see dense._1)
#: ``plan.codes`` holds, after the batch size's three kernel codes, the address of BLAS's ``?axpy``
#: (``blas.axpy_address``; 0 off BLAS) and the steps left before momentum's next flush of v.
AXPY_AT, FLUSH_AT = 3, 4


def step_signature(dt):
    """The fused step's (``STEPS``) numba signature for arrays of ``dt`` (a numba float type)."""
    i64, f64, c1 = types.int64, types.float64, lambda t: types.Array(t, 1, "C")
    return f64(_m(dt), _m(dt), c1(i64), types.Array(i64, 2, "C"), c1(f64), c1(dt), c1(i64), i64, i64, f64,
               f64, f64, types.boolean, types.Array(f64, 2, "C"), types.Array(f64, 2, "C"), f64, f64, i64,
               types.boolean, c1(dt), f64, f64, f64, i64, c1(f64))


@jit(inline="always")
def _weight_grad_tiles(fns, scale, x, g, dw, aliased, codes, scratch):
    """dw = scale x.T @ g / B, whole, by the tiles' plain update of zeros with a
    step of -scale (by BLAS, the steps call ``matmul``: a branch on the run-time
    ``gemm`` here would compile BLAS's call into the tiles' steps too)."""
    zero = dw.dtype.type(0)
    dw_flat = dw.reshape(-1)
    for j in range(dw_flat.size):
        dw_flat[j] = zero
    if x.shape[0] >= UPDATE_TILES_MIN_BATCH:
        _call(fns, UPD_TILED, aliased, (x, g, dw, -scale, scratch))
    else:
        _call(fns, UPD_PLAIN, codes[2], (x, g, dw, -scale, zero, scratch))


@jit(inline="always")
def layer_bound(adam, i, g_max, sums, bounds, m_bounds, after, lr, momentum, weight_decay, nesterov, beta2,
                eps, step, big, limit):
    """Whether layer i's update is safe (``sgd_update_bound``, or with ``adam``
    ``adam_update_bound``, ``momentum`` its beta1), on a gradient bound
    ``g_max`` whose largest sums add ``sums``; its bounds after the update
    into ``after[i]``, and Adam's first-moment bound raised in ``m_bounds[i]``
    (a bound either way: kept even if refused)."""
    if adam:
        safe, after[i, 0], m_max, after[i, 1] = adam_update_bound(
            g_max, sums, bounds[i, 0], m_bounds[i], bounds[i, 1], lr, momentum, beta2, eps, weight_decay,
            step, big, limit)
        m_bounds[i] = max(m_bounds[i], m_max)
        return safe
    safe, after[i, 0], after[i, 1] = sgd_update_bound(
        g_max, sums, bounds[i, 0], bounds[i, 1], lr, momentum, weight_decay, nesterov, big, limit)
    return safe


@jit(inline="always")
def grad_offset(table, i):
    """Where layer i's dw starts in a flat gradient buffer ([dw0, db0, dw1, db1, ...])."""
    off = 0
    for j in range(i):
        off += table[j, N_IN] * table[j, N_OUT] + table[j, N_OUT]
    return off


def _make_step(code):
    # constants of the compiled function: the other variants' code is not compiled
    adam, grads, by_blas = code // 2 == 1, code // 2 == 2, code % 2 == 1

    def compiled_step(x, t, fns, table, alphas, scratch, codes, loss_kind, update, lr, momentum,
                      weight_decay, nesterov, bounds, after, big, limit, gemm, wide, work, x_max, beta2, eps,
                      step, m_bounds):
        """The step of ``fused_sgd_step``, on a plan's table of addresses (``fns``:
        ``LEAVES.table(dtype)``; ``codes``: the batch size's ``forward_rows_code``,
        ``input_grad_code`` and ``rows_code``, then ``AXPY_AT`` and ``FLUSH_AT``'s
        entries, the last counted down here; ``update``: which update kernel).  The
        caller has made sure that every kernel the step reaches is compiled.
        ``after``: room for the bounds after the step, (layers, 2) float64.

        ``gemm``: 0 for products by the register tiles and compiled loops (the
        ``_tiles`` steps); else (the ``_blas`` steps) the address of BLAS's
        ``?gemm`` (``blas.address``: ``wide``, its integers are 64 bits), which
        then takes every product, with the epilogues fused into one
        pass each (bias and activation; activation gradient and bias gradient, into
        ``work``) and the update folded into the weight-gradient product where it
        can be: ``alpha = -lr / B``, ``beta = 1`` into w for plain SGD without weight
        decay, ``beta = mu`` into the velocity for momentum without Nesterov, then
        ``w -= lr v`` by BLAS's ``?axpy`` (``v += wd w`` first, the same way), and
        on one step in ``MOMENTUM_FLUSH_EVERY`` (the plan's first included) by the
        pass that also flushes v's subnormals (``momentum_apply``); the others form
        dw whole (in ``work``), then update from it (plain SGD with weight decay by
        ``?axpy`` too: ``dw += wd w``, ``w -= lr dw``).

        The Adam steps (``update`` is ``ADAM``; ``momentum`` is its beta1;
        ``beta2``, ``eps``, ``step`` the rest of ``adam_step``'s arguments;
        ``m_bounds`` as in ``fastnet.kernels.numpy.fused_adam_step``): dw and db
        formed whole in ``work``, by BLAS or by the tiles' plain update of zeros
        with a step of -1.

        The gradients' steps, the gradients alone (``fused_gradients``): ``lr`` times dw
        and db written into ``work``, the flat gradient buffer, in parameter
        order; no bound, no update."""
        T = x.dtype.type
        lr_, mu, wd = T(lr), T(momentum), T(weight_decay)
        one, zero, inv = T(1), T(0), T(1) / T(x.shape[0])
        n_layers, batch = table.shape[0], x.shape[0]
        n4 = batch // 4 * 4
        y = x
        for i in range(n_layers):
            n_in, n_out = table[i, N_IN], table[i, N_OUT]
            x_i, w, b = y, array_at(table[i, W], n_in, n_out, x), array_at(table[i, B], _ONE, n_out, x)
            a, y = array_at(table[i, A], batch, n_out, x), array_at(table[i, Y], batch, n_out, x)
            if by_blas:
                matmul(gemm, wide, one, x_i, False, w, False, zero, a)
            else:
                if n4 > 0:
                    _call(fns, FWD_TILES, 0, (x_i, w, b, a))
                if n4 < batch:
                    _call(fns, FWD_ROWS, codes[0], (x_i, w, b, a))
            _call(fns, ACT, table[i, KIND], (b, alphas[i], a, y, by_blas))  # the tiles added b
        g = array_at(table[n_layers - 1, G], batch, table[n_layers - 1, N_OUT], x)
        loss = _call(fns, LOSS, loss_kind, (y, t, g))
        if not math.isfinite(loss):
            return loss
        for i in range(n_layers - 1, -1, -1):  # every dz, with the weights before any update
            n_in, n_out = table[i, N_IN], table[i, N_OUT]
            w, b = array_at(table[i, W], n_in, n_out, x), array_at(table[i, B], _ONE, n_out, x)
            a, y = array_at(table[i, A], batch, n_out, x), array_at(table[i, Y], batch, n_out, x)
            if grads:
                at = grad_offset(table, i) + n_in * n_out
                db = work[at:at + n_out].reshape((1, n_out))
            else:
                db = work[table[i, DB]:table[i, DB] + n_out].reshape((1, n_out)) if by_blas or adam else b
            _call(fns, ACT_GRAD, table[i, KIND], (alphas[i], a, y, g, g, db, by_blas or adam or grads))
            if i > 0:
                g_in = array_at(table[i - 1, G], batch, n_in, x)
                if by_blas:
                    matmul(gemm, wide, one, g, False, w, True, zero, g_in)
                else:
                    _call(fns, DX, codes[1], (g, w, g_in))
                g = g_in
        if grads:  # lr (the scale) times dw and db, into the flat buffer
            for i in range(n_layers):
                n_in, n_out = table[i, N_IN], table[i, N_OUT]
                x_i = x if i == 0 else array_at(table[i - 1, Y], batch, n_in, x)
                g, at = array_at(table[i, G], batch, n_out, x), grad_offset(table, i)
                dw = work[at:at + n_in * n_out].reshape((n_in, n_out))
                if by_blas:
                    matmul(gemm, wide, lr_ / T(x_i.shape[0]), x_i, True, g, False, zero, dw)
                else:
                    _weight_grad_tiles(fns, lr_, x_i, g, dw, table[i, ALIASED], codes, scratch)
                if lr_ != one:
                    db = work[at + n_in * n_out:at + n_in * n_out + n_out]
                    for j in range(n_out):
                        db[j] *= lr_
            return loss
        for i in range(n_layers - 1, -1, -1):  # every update checked before any is applied
            n_in, n_out = table[i, N_IN], table[i, N_OUT]
            x_i = x if i == 0 else array_at(table[i - 1, Y], batch, n_in, x)
            in_max = x_max if i == 0 and x_max >= 0 else _call(fns, MAX_ABS, 0, (x_i,))
            g_max = _call(fns, MAX_ABS, 0, (array_at(table[i, G], batch, n_out, x),)) * max(in_max, 1.0)
            if not layer_bound(adam, i, g_max, batch * g_max, bounds, m_bounds, after, lr, momentum,
                               weight_decay, nesterov, beta2, eps, step, big, limit):
                return -(i + 1.0)
        dw_at = table[n_layers - 1, DB] + table[n_layers - 1, N_OUT]
        flush = False
        if by_blas and update == UPD_MOMENTUM and not nesterov:
            codes[FLUSH_AT] -= 1
            flush = codes[FLUSH_AT] <= 0 or codes[AXPY_AT] == 0
            if flush:
                codes[FLUSH_AT] = MOMENTUM_FLUSH_EVERY
        for i in range(n_layers - 1, -1, -1):
            n_in, n_out = table[i, N_IN], table[i, N_OUT]
            w, b = array_at(table[i, W], n_in, n_out, x), array_at(table[i, B], _ONE, n_out, x)
            x_i = x if i == 0 else array_at(table[i - 1, Y], batch, n_in, x)
            g = array_at(table[i, G], batch, n_out, x)
            if adam:
                db = work[table[i, DB]:table[i, DB] + n_out].reshape((1, n_out))
                dw = work[dw_at:dw_at + n_in * n_out].reshape((n_in, n_out))
                if by_blas:
                    matmul(gemm, wide, one / T(x_i.shape[0]), x_i, True, g, False, zero, dw)
                else:
                    _weight_grad_tiles(fns, one, x_i, g, dw, table[i, ALIASED], codes, scratch)
                mw, vw = array_at(table[i, MW], n_in, n_out, x), array_at(table[i, VW], n_in, n_out, x)
                mb, vb = array_at(table[i, MB], _ONE, n_out, x), array_at(table[i, VB], _ONE, n_out, x)
                _call(fns, ADAM, 0, (w, dw, mw, vw, lr, momentum, beta2, eps, weight_decay, step))
                _call(fns, ADAM, 0, (b, db, mb, vb, lr, momentum, beta2, eps, weight_decay, step))
            elif by_blas:
                db = work[table[i, DB]:table[i, DB] + n_out].reshape((1, n_out))
                if update == UPD_MOMENTUM:
                    vw, vb = array_at(table[i, VW], n_in, n_out, x), array_at(table[i, VB], _ONE, n_out, x)
                    if nesterov:
                        dw = work[dw_at:dw_at + n_in * n_out].reshape((n_in, n_out))
                        matmul(gemm, wide, inv, x_i, True, g, False, zero, dw)
                        _call(fns, SGD_STEP, 0, (w, dw, vw, lr, momentum, weight_decay, nesterov))
                    else:
                        matmul(gemm, wide, inv, x_i, True, g, False, mu, vw)
                        if flush:  # the pass: v's subnormals flushed (a step in MOMENTUM_FLUSH_EVERY)
                            _call(fns, MOMENTUM_APPLY, 0, (w, vw, lr_, wd))
                        else:  # on BLAS's threads (see MOMENTUM_FLUSH_EVERY for why)
                            _call(fns, AXPY_APPLY, 0, (codes[AXPY_AT], wide, w, vw, lr_, wd))
                    _call(fns, SGD_STEP, 0, (b, db, vb, lr, momentum, weight_decay, nesterov))
                elif weight_decay == 0:
                    matmul(gemm, wide, -lr_ * inv, x_i, True, g, False, one, w)
                    _call(fns, SGD_STEP, 0, (b, db, b, lr, 0.0, 0.0, False))
                else:  # not beta = 1 - lr wd: in float32 that rounds to a multiple of 2^-24
                    dw = work[dw_at:dw_at + n_in * n_out].reshape((n_in, n_out))
                    matmul(gemm, wide, inv, x_i, True, g, False, zero, dw)
                    if codes[AXPY_AT] != 0:  # dw += wd w, w -= lr dw: on BLAS's threads, as momentum's
                        _call(fns, AXPY_APPLY, 0, (codes[AXPY_AT], wide, w, dw, lr_, wd))
                    else:
                        _call(fns, SGD_STEP, 0, (w, dw, w, lr, 0.0, weight_decay, False))
                    _call(fns, SGD_STEP, 0, (b, db, b, lr, 0.0, weight_decay, False))
            elif update == UPD_MOMENTUM:
                vw, vb = array_at(table[i, VW], n_in, n_out, x), array_at(table[i, VB], _ONE, n_out, x)
                _call(fns, UPD_MOMENTUM, codes[2], (x_i, g, w, vw, lr_, mu, wd, nesterov, scratch))
                _call(fns, BIAS_MOMENTUM, 0, (g, b, vb, lr_, mu, wd, nesterov, scratch))
            else:
                if update == UPD_TILED:
                    _call(fns, UPD_TILED, table[i, ALIASED], (x_i, g, w, lr_, scratch))
                else:
                    _call(fns, UPD_PLAIN, codes[2], (x_i, g, w, lr_, wd, scratch))
                _call(fns, BIAS_PLAIN, 0, (g, b, lr_, wd, scratch))
        for i in range(n_layers):  # elementwise: an array assignment compiles numba's message formatting
            bounds[i, 0], bounds[i, 1] = after[i, 0], after[i, 1]
        return loss

    return compiled_step


#: The fused step, by optimizer and by where its products go (``step_code``): SGD, Adam, the
#: gradients alone, each by the register tiles (``gemm`` 0) and by BLAS.  One source: each
#: compiles only its own code (Adam's cost 0.2-0.5 s of each cold start; the SGD step by the tiles
#: compiles in 1.0-1.2 s, by BLAS in 1.7 s, where one for both took 1.9 s; cold, Zen 4).
STEPS = by_code(_make_step, ("sgd_tiles", "sgd_blas", "adam_tiles", "adam_blas", "gradients_tiles",
                             "gradients_blas"), jit)
GRADS = len(LEAVES.entries)  # ``update`` for the gradients' steps (not a leaf's index)


def step_code(update, by_blas):
    """Which of ``STEPS`` takes this ``update``, with products by BLAS or not."""
    return 2 * (1 if update == ADAM else 2 if update == GRADS else 0) + (1 if by_blas else 0)


@functools.cache
def _step_kernel(dtype, code):
    """[(``STEPS[code]``, its argument types for arrays of ``dtype``)]: what an ``Aside`` compiles."""
    dt = types.float32 if dtype == np.float32 else types.float64
    return [(STEPS[code], step_signature(dt).args)]


def step_aside(dtype, update, by_blas, checks_first=False):
    """The ``Aside`` of the fused step for ``update`` and ``by_blas`` (its
    ``STEPS``) and arrays of ``dtype`` (a ``numpy.dtype``), or None when this
    process has the step already.  ``ready`` opens one; a caller opens one of
    its own before compiles that come first (``fastnet.training.steps.compiling_ahead``),
    with ``checks_first`` when those begin with ``max_abs`` of a matrix (a
    cold process: the helper starts at once)."""
    if DISABLED:  # NUMBA_DISABLE_JIT: nothing compiles
        return None
    [(kernel, args)] = entry = _step_kernel(dtype, step_code(update, by_blas))
    if args in kernel.overloads:  # 17 us (a tuple of 25 numba types hashed): not on a step's hot path
        return None
    return Aside(dtype, entry, [(max_abs, (args[0],))] if checks_first else ())  # args[0]: x, a matrix


class FusedPlan:
    """What ``fused_sgd_step`` works on: the layers' arrays as a table of
    addresses and widths, the arrays themselves (held, so that the addresses
    stay valid), scratch space, the shapes of x and t it takes, and which
    (loss, update) kernels are compiled for it.  A copy or a pickle is a new
    plan made from (copies of) the arrays: the addresses are of this process's
    arrays, and only ``fused_plan`` makes a table from arrays."""

    __slots__ = ("arrays", "table", "alphas", "scratch", "codes", "fns", "dtype", "x_shape", "t_shape",
                 "velocities", "moments", "ready", "after", "limits", "gemm", "work", "mws", "mbs",
                 "no_m_bounds", "n_params")

    def __reduce__(self):
        ws, bs, vws, vbs, as_, ys, gs, kinds, alphas = (list(c) for c in zip(*self.arrays, strict=True))
        return fused_plan, (ws, bs, vws, vbs, kinds, alphas, as_, ys, gs, None, list(self.mws),
                            list(self.mbs))


def fused_plan(ws, bs, vws, vbs, kinds, alphas, as_, ys, gs, scratch=None, mws=(), mbs=()):
    """Same contract as ``fastnet.kernels.numpy.fused_plan``.

    The compiled step reads the arrays through their addresses, trusting their
    shapes, so the plan checks what it relies on, once: every array C-contiguous
    and writeable, of one float dtype, each layer's shapes chained to the
    next, every workspace of one batch size, the velocities empty or of their
    parameter's shape, Adam's moments (when given, one pair per layer) of
    their parameter's shape.  A ValueError says what did not hold.  Nothing is
    compiled here: the first step of each loss and update compiles (or loads
    from the cache) the kernels it reaches (``ready``).
    """
    layers = list(zip(ws, bs, vws, vbs, as_, ys, gs, kinds, alphas, strict=True))
    if not layers:
        raise ValueError("a fused plan needs at least one layer")
    moments = len(mws) > 0 or len(mbs) > 0
    if moments and not len(mws) == len(mbs) == len(layers):
        raise ValueError(f"Adam's moments must be one pair per layer ({len(layers)}), got {len(mws)} and "
                         f"{len(mbs)}")
    dtype, batch = np.asarray(ws[0]).dtype, np.shape(as_[0])[0]
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"the fused step computes in float32 or float64, got {dtype}")
    if batch < 1:
        raise ValueError(f"a fused plan needs workspaces of at least one row, got {batch}")
    table = np.zeros((len(layers), MB + 1), np.int64)
    velocities, need, db_at, dw_size = [], 0, 0, 0
    for i, (w, b, vw, vb, a, y, g, kind, _) in enumerate(layers):
        n_in, n_out = w.shape if isinstance(w, np.ndarray) and w.ndim == 2 else (-1, -1)
        if i > 0 and n_in != table[i - 1, N_OUT]:
            raise ValueError(f"layer {i} has {n_in} inputs but layer {i - 1} has "
                             f"{table[i - 1, N_OUT]} outputs")
        want = {"w": (w, (n_in, n_out)), "b": (b, (1, n_out)), "a": (a, (batch, n_out)),
                "y": (y, (batch, n_out)), "g": (g, (batch, n_out))}
        has_v = moments or np.size(vw) > 0 or np.size(vb) > 0
        if has_v:
            want.update(vw=(vw, (n_in, n_out)), vb=(vb, (1, n_out)))
        if moments:
            want.update(mw=(mws[i], (n_in, n_out)), mb=(mbs[i], (1, n_out)))
        velocities.append(has_v)
        for name, (arr, shape) in want.items():
            _check_array(arr, shape, dtype, f"layer {i}'s {name}")
        if not 0 <= kind < len(LEAVES.entries[ACT][0]):
            raise ValueError(f"layer {i}'s activation code must index fastnet.kernels.ACTIVATIONS, "
                             f"got {kind}")
        table[i] = [data_address(w), data_address(b), data_address(vw), data_address(vb),
                    data_address(a), data_address(y), data_address(g), n_in, n_out, int(kind),
                    rows_alias(n_in, n_out, dtype.itemsize), db_at,
                    data_address(mws[i]) if moments else 0, data_address(mbs[i]) if moments else 0]
        need = max(need, 5 * n_out, padded_size(batch, n_in, n_out, dtype.itemsize))
        db_at, dw_size = db_at + n_out, max(dw_size, n_in * n_out)
    plan = FusedPlan()
    plan.arrays = tuple(layers)
    plan.table, plan.alphas = table, np.array([float(a) for a in alphas], np.float64)
    reuse = (isinstance(scratch, np.ndarray) and scratch.ndim == 1 and scratch.dtype == dtype
             and scratch.size >= need and scratch.flags.c_contiguous and scratch.flags.writeable)
    plan.scratch = scratch if reuse else _aligned_empty(need, dtype)
    plan.fns, plan.dtype = LEAVES.table(dtype), dtype
    plan.x_shape, plan.t_shape = (batch, int(table[0, N_IN])), (batch, int(table[-1, N_OUT]))
    plan.velocities, plan.moments, plan.ready = all(velocities), moments, set()
    plan.mws, plan.mbs, plan.no_m_bounds = tuple(mws), tuple(mbs), np.zeros(len(layers))  # SGD's m_bounds
    plan.n_params = sum(w.size + b.size for w, b in zip(ws, bs, strict=True))  # fused_gradients' buffer
    plan.after, plan.limits = np.zeros((len(layers), 2), np.float64), safe_limits(dtype)
    gemm = blas_address(dtype) if fused_by_blas(batch, max(w.nbytes for w in ws), adam=moments) else None
    # ?axpy takes a layer's whole count in one integer: a 32-bit BLAS's cannot hold 2^31 or more
    by_axpy = gemm is not None and (gemm[1] or dw_size < 2**31)
    plan.codes = np.array([forward_rows_code(batch), input_grad_code(batch), rows_code(batch),
                           axpy_address(dtype) if by_axpy else 0, 1], np.int64)
    # the bias gradients and one dw in ``work``: for the products by BLAS, and Adam
    plan.work = _aligned_empty(db_at + dw_size, dtype) if gemm is not None or moments else plan.scratch[:0]
    plan.gemm = (0, False) if gemm is None else gemm
    return plan


def _aligned_empty(n, dtype):
    """n elements of dtype starting on a 64-byte boundary (as the layers' arrays do)."""
    buf = np.empty(n + 64 // dtype.itemsize, dtype)
    start = (-buf.__array_interface__["data"][0] % 64) // dtype.itemsize
    return buf[start:start + n]


def _check_array(arr, shape, dtype, name):
    if (isinstance(arr, np.ndarray) and arr.shape == shape and arr.dtype == dtype
            and arr.flags.c_contiguous and arr.flags.writeable):
        return
    got = repr(arr)
    if isinstance(arr, np.ndarray):
        got = (f"{'a read-only' if not arr.flags.writeable else 'an'} "
               f"{'' if arr.flags.c_contiguous else 'non-contiguous '}array of dtype {arr.dtype} "
               f"and shape {arr.shape}")
    raise ValueError(f"{name} must be a writeable C-contiguous {dtype} array of shape {shape}, got {got}")


def _update_kernel(batch, momentum, weight_decay, by_blas):
    """Which update an SGD step takes (products by BLAS: momentum or not)."""
    if momentum != 0:
        return UPD_MOMENTUM
    if by_blas:
        return UPD_PLAIN
    return UPD_TILED if batch >= UPDATE_TILES_MIN_BATCH and weight_decay == 0 else UPD_PLAIN


def fused_sgd_step(x, t, plan, loss_kind, lr, momentum, weight_decay, nesterov, bounds, x_max=-1.0):
    """Same contract as ``fastnet.kernels.numpy.fused_sgd_step``, in one compiled call."""
    update = sgd_update(plan, momentum, weight_decay)
    return _run(x, t, plan, loss_kind, update, lr, momentum, weight_decay, nesterov, bounds, x_max,
                0.0, 0.0, 0, plan.no_m_bounds)


def fused_adam_step(x, t, plan, loss_kind, lr, beta1, beta2, eps, weight_decay, step, bounds, m_bounds,
                    x_max=-1.0):
    """Same contract as ``fastnet.kernels.numpy.fused_adam_step``, in one compiled call."""
    check_adam(plan, m_bounds, step)
    return _run(x, t, plan, loss_kind, ADAM, lr, beta1, weight_decay, False, bounds, x_max,
                beta2, eps, int(step), m_bounds)


def fused_gradients(x, t, plan, loss_kind, grad_scale, grads):
    """Same contract as ``fastnet.kernels.numpy.fused_gradients``, in one compiled call."""
    check_grads(plan, grads)
    return _run(x, t, plan, loss_kind, GRADS, grad_scale, 0.0, 0.0, False, plan.after, -1.0,
                0.0, 0.0, 0, plan.no_m_bounds, work=grads)


def sgd_update(plan, momentum, weight_decay):
    """The update an SGD step on ``plan`` takes, refused when it needs velocities the plan lacks."""
    check_velocities(plan, momentum)
    return _update_kernel(plan.x_shape[0], momentum, weight_decay, plan.gemm[0] != 0)


def check_velocities(plan, momentum):
    """Refuse momentum on a plan made without the velocities."""
    if momentum != 0 and not plan.velocities:
        raise ValueError("momentum needs the velocities, and this plan was made with empty ones")


def check_adam(plan, m_bounds, step):
    """Refuse an Adam step's arguments that the compiled step would misuse."""
    if not plan.moments:
        raise ValueError("Adam needs the moments, and this plan was made without them")
    if not (type(m_bounds) is np.ndarray and m_bounds.shape == plan.after.shape[:1]
            and m_bounds.dtype == np.float64 and m_bounds.flags.c_contiguous and m_bounds.flags.writeable):
        raise ValueError(f"m_bounds must be a writeable C-contiguous float64 array of shape "
                         f"{plan.after.shape[:1]}, got {m_bounds!r:.80}")
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be the step count after this step, an int >= 1, got {step!r:.80}")


def check_grads(plan, grads):
    """Refuse a flat gradient buffer (``fused_gradients``, ``apply``) the compiled code would misuse."""
    need = plan.n_params
    if not (type(grads) is np.ndarray and grads.ndim == 1 and grads.dtype == plan.dtype
            and grads.size >= need and grads.flags.c_contiguous and grads.flags.writeable):
        raise ValueError(f"grads must be a writeable C-contiguous 1-D {plan.dtype} array of at least {need} "
                         f"elements, got {grads!r:.80}")


def check_bounds(plan, bounds):
    """Refuse bounds the compiled code would misuse."""
    after = plan.after
    if not (type(bounds) is np.ndarray and bounds.shape == after.shape and bounds.dtype == after.dtype
            and bounds.flags.c_contiguous and bounds.flags.writeable):
        raise ValueError(f"bounds must be a writeable C-contiguous float64 array of shape {after.shape}, "
                         f"got {bounds!r:.80}")


def ready(plan, loss_kind, update, nesterov, bounds):
    """Refuse bounds the step would misuse, and make every kernel it reaches
    ready (``_make_ready``): compiled, or loaded from the cache."""
    check_bounds(plan, bounds)
    if (loss_kind, update, nesterov) not in plan.ready:
        with step_aside(plan.dtype, update, plan.gemm[0] != 0) or contextlib.nullcontext() as aside:
            _make_ready(plan, loss_kind, update, nesterov, aside)
        plan.ready.add((loss_kind, update, nesterov))


def _run(x, t, plan, loss_kind, update, lr, momentum, weight_decay, nesterov, bounds, x_max, beta2, eps,
         step, m_bounds, work=None):
    """Both steps' checks of their arguments, the kernels made ready, and the compiled call."""
    if x.shape != plan.x_shape or t.shape != plan.t_shape or x.dtype != plan.dtype or t.dtype != plan.dtype:
        raise ValueError(f"this plan takes x of shape {plan.x_shape} and t of shape {plan.t_shape} "
                         f"in {plan.dtype}, got {x.shape} {x.dtype} and {t.shape} {t.dtype}")
    ready(plan, loss_kind, update, nesterov, bounds)
    after = plan.after
    try:
        return STEPS[step_code(update, plan.gemm[0] != 0)](
            x, t, plan.fns, plan.table, plan.alphas, plan.scratch, plan.codes, loss_kind, update, lr,
            momentum, weight_decay, nesterov, bounds, after, *plan.limits, *plan.gemm,
            plan.work if work is None else work, float(x_max), beta2, eps, step, m_bounds)
    except Exception:  # numba refused the arrays' types (checked here only then: it costs every step)
        for name, arr in (("x", x), ("t", t)):
            if not (arr.flags.c_contiguous and arr.flags.writeable and arr.flags.aligned):
                raise ValueError(f"{name} must be a C-contiguous, writeable, aligned array (a copy of "
                                 f"it is), got {'a read-only' if not arr.flags.writeable else 'an'} "
                                 f"array of flags {arr.flags}") from None
        raise


def _leaves(plan, loss_kind, update, nesterov):
    """[(entry, code)]: the ``LEAVES`` a step of this loss and update reaches on this plan."""
    if not 0 <= loss_kind < len(LEAVES.entries[LOSS][0]):
        raise ValueError(f"loss_kind must be one of fastnet.kernels.LOSSES' codes, got {loss_kind}")
    by_blas, batch, out = plan.gemm[0] != 0, plan.x_shape[0], []

    def need(entry, code=0):
        out.append((entry, code))

    for kind in set(plan.table[:, KIND].tolist()):
        need(ACT, kind)
        need(ACT_GRAD, kind)
    if not by_blas:  # the products by the tiles and compiled loops
        if batch >= 4:
            need(FWD_TILES)
        if batch % 4:
            need(FWD_ROWS, plan.codes[0])
        if plan.table.shape[0] > 1:
            need(DX, plan.codes[1])
    need(LOSS, loss_kind)
    if update != GRADS:  # the bounds' checks
        need(MAX_ABS)
    if update in (ADAM, GRADS):
        if update == ADAM:
            need(ADAM)
        if not by_blas:  # dw by the tiles' plain update
            if batch >= UPDATE_TILES_MIN_BATCH:
                for code in set(plan.table[:, ALIASED].tolist()):
                    need(UPD_TILED, code)
            else:
                need(UPD_PLAIN, plan.codes[2])
    elif by_blas:
        need(SGD_STEP)
        if update == UPD_MOMENTUM and not nesterov:
            need(MOMENTUM_APPLY)
        if plan.codes[AXPY_AT] != 0:  # momentum, or plain SGD with weight decay (neither known here,
            need(AXPY_APPLY)  # and the latter takes it with any nesterov flag)
    else:
        for code in set(plan.table[:, ALIASED].tolist()) if update == UPD_TILED else (plan.codes[2],):
            need(update, code)
        need(BIAS_MOMENTUM if update == UPD_MOMENTUM else BIAS_PLAIN)
    return out


def _make_ready(plan, loss_kind, update, nesterov, aside=None):
    """Compile (or load) every kernel a step of this loss and update reaches on
    this plan.  With ``aside``, the block of a step this process has not
    compiled or loaded (``step_aside``): the leaves neither here nor in the
    cache are offered to its helper, which compiles them from the first
    (``Aside.share``), while this process compiles the step, then the leaves
    from the last, loading those the helper has cached by then."""
    dtype = plan.dtype
    leaves = [leaf for leaf in _leaves(plan, loss_kind, update, nesterov) if not LEAVES.has(dtype, *leaf)]
    if aside is None:
        for leaf in leaves:
            LEAVES.need(dtype, *leaf)
        return
    kernels = [LEAVES.kernel(dtype, *leaf) for leaf in leaves]
    aside.share([entry for entry in kernels if not have(*entry)])  # the helper stops at one it has
    for kernel, args in aside.kernels:
        kernel.compile(args)
    for leaf in reversed(leaves):
        LEAVES.need(dtype, *leaf)
    aside.finish()

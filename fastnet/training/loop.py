"""The epochs of ``fit``: minibatch SGD and full-batch gradient descent, on
validated data (``X`` the network's dtype, ``T`` its targets) and checked state."""

import time

import numpy as np

from fastnet._validation import kernel_ready
from fastnet._workspace import aligned_empty
from fastnet.training.paths import execution_plan
from fastnet.training.steps import apply_gradients, forward_backward, show_fused, train_batch


def batches(X, T, order, starts, batch_size):
    """(step, x, t) per minibatch (steps from 1); shuffled batches (``order``, a
    permutation, or None) are gathered into two buffers reused for the whole
    epoch, so the steps allocate nothing."""
    if order is not None:
        xbuf = aligned_empty((min(batch_size, X.shape[0]), X.shape[1]), X.dtype)
        tbuf = aligned_empty((xbuf.shape[0], T.shape[1]), T.dtype)
    for step, s in enumerate(starts, start=1):
        if order is None:
            yield step, kernel_ready(X[s:s + batch_size]), T[s:s + batch_size]
        else:
            idx = order[s:s + batch_size]
            m = idx.shape[0]
            # mode="clip": with the default "raise", take copies through a temporary
            yield (step, np.take(X, idx, axis=0, out=xbuf[:m], mode="clip"),
                   np.take(T, idx, axis=0, out=tbuf[:m], mode="clip"))


def batch_accuracy(net, tb):
    """Number of correct predictions in the last forward pass's batch (0 for regression)."""
    if not net.loss.is_classifier:
        return 0.0
    return net.loss.accuracy(net.layers[-1].y, tb) * tb.shape[0]


#: About how long one compiled call of ``epoch_sgd`` runs, in seconds: between
#: calls the progress bar moves and Ctrl-C stops ``fit``.
CHUNK_SECONDS = 0.2


def epoch_sgd(net, X, T, order, starts, batch_size, epoch, bar):
    """One epoch of minibatch steps; returns (mean loss, accuracy), each batch's
    measured before its update.  On the fused path the batches of
    ``batch_size`` rows run in compiled calls of many steps each
    (``compiled_steps``), the same steps on the same batches as one call per
    step; a last, shorter batch takes a call of its own."""
    total_loss = total_acc = 0.0
    n = X.shape[0]
    whole = starts == range(0, n, batch_size)  # fit's own epoch, not a shard's steps
    done = compiled_steps(net, X, T, order, batch_size, epoch, bar) if whole else None
    steps = 0
    if done is not None:
        steps, total_loss, total_acc = done
        starts = starts[steps:]
    for step, xb, tb in batches(X, T, order, starts, batch_size):
        step += steps
        loss = train_batch(net, xb, tb, f"at epoch {epoch}, step {step}", x_max=net.step_state.x_max)
        total_acc += batch_accuracy(net, tb)  # from the outputs before the update
        total_loss += loss * xb.shape[0]
        bar.update()
    return total_loss / n, total_acc / n


def compiled_steps(net, X, T, order, batch_size, epoch, bar):
    """The epoch's batches of exactly ``batch_size`` rows, in compiled calls of
    about ``CHUNK_SECONDS`` each (``fused_sgd_epoch``, ``fused_adam_epoch``):
    ``(steps taken, loss sum, correct predictions)``, the epoch's first steps
    (all its whole batches, unless the settings change meanwhile), or None
    off the fused path (then nothing was done).  A step the compiled loop does not apply (a
    refused update, a loss that is not finite) is taken again by
    ``train_batch``, which looks at the exact bounds or raises, naming it."""
    n_steps = X.shape[0] // batch_size
    if n_steps == 0 or not (X.flags.c_contiguous and X.flags.writeable and T.flags.c_contiguous
                            and T.flags.writeable):
        return None
    k, loss_code = net.kernels, net.loss.code
    if net.plan(batch_size) != "fused":
        return None
    if order is None:
        order = np.arange(X.shape[0], dtype=np.int64)
    state = net.step_state
    xbuf = state.workspace("epoch_x", batch_size, X.shape[1])
    tbuf = state.workspace("epoch_t", batch_size, T.shape[1])
    total_loss = total_acc = 0.0
    done, chunk = 0, 4
    if net.optimizer.state is None:  # the first step makes the optimizer's state, when it is applied
        np.take(X, order[:batch_size], axis=0, out=xbuf)
        np.take(T, order[:batch_size], axis=0, out=tbuf)
        total_loss = train_batch(net, xbuf, tbuf, f"at epoch {epoch}, step 1", x_max=state.x_max) * batch_size
        total_acc = batch_accuracy(net, tbuf)
        done = 1
        bar.update()
    totals = np.zeros(3)
    buffers = None
    while done < n_steps:
        # every chunk after the first (which follows the epoch's check, or the first step's), the
        # state as it is now: checked (one comparison unless something changed, another thread's
        # change included; a StepState and plans made anew then)
        if buffers is not None:
            net.check()
        state, opt = net.step_state, net.optimizer
        if opt.state is None:  # a new optimizer: its first step makes its state (train_batch)
            break
        path, plan, new = execution_plan(net, batch_size, state)
        if path != "fused":
            break  # the settings changed: the epoch's other steps by train_batch, one by one
        adam = isinstance(opt.state, dict)
        if new is not buffers:
            show_fused(net, xbuf, new)
            buffers = new
        todo = min(chunk, n_steps - done)
        totals[:] = 0
        started = time.perf_counter()
        first_t = opt.next_t() if adam else 0
        try:
            if adam:
                k.fused_adam_epoch(X, T, order, done * batch_size, todo, xbuf, tbuf, plan, loss_code,
                                   net.loss.accuracy_code, opt.lr, opt.beta1, opt.beta2, opt.eps,
                                   opt.weight_decay, first_t, state.bounds, state.m_bounds, state.x_max,
                                   totals)
            else:
                k.fused_sgd_epoch(X, T, order, done * batch_size, todo, xbuf, tbuf, plan, loss_code,
                                  net.loss.accuracy_code, opt.lr, opt.momentum, opt.weight_decay,
                                  bool(opt.nesterov and opt.momentum != 0), state.bounds, state.x_max,
                                  totals)
        finally:  # even when interrupted: the steps applied are counted
            applied = int(totals[2])
            if adam:
                dict.__setitem__(opt.state, "t", first_t - 1 + applied)
        elapsed = time.perf_counter() - started
        total_loss += float(totals[0])
        total_acc += float(totals[1])
        done += applied
        bar.update(applied)
        if applied < todo:  # step ``done`` was not applied: its batch is in the buffers
            loss = train_batch(net, xbuf, tbuf, f"at epoch {epoch}, step {done + 1}", x_max=state.x_max)
            total_acc += batch_accuracy(net, tbuf)
            total_loss += loss * batch_size
            done += 1
            bar.update()
        elif elapsed > 0:
            chunk = max(1, min(4 * chunk, int(chunk * CHUNK_SECONDS / elapsed)))
    if buffers is not None:
        show_fused(net, xbuf, buffers)
    return done, total_loss, total_acc


def epoch_gd(net, X, T, order, starts, batch_size, epoch, bar):
    """One full-batch step: the epoch's mean gradient (``gd_accumulate``), then one update."""
    acc_grads, total_loss, total_acc = gd_accumulate(net, X, T, order, starts, batch_size, epoch, bar)
    apply_gradients(net, acc_grads, f"at epoch {epoch}")  # the state was checked by fit
    return total_loss / X.shape[0], total_acc / X.shape[0]


def gd_accumulate(net, X, T, order, starts, batch_size, epoch, bar):
    """The epoch's mean gradient (the network's buffers, in parameter order),
    loss sum and number correct, over chunks of ``batch_size`` as a running
    mean weighted by chunk size (no list of gradients is kept)."""
    acc_grads = net.step_state.gd_buffers(net.parameters())
    for a in acc_grads:
        a.fill(0)  # the first chunk has frac = 1, but 0 * garbage may be NaN
    total_loss = total_acc = 0.0
    seen = 0
    for step, xb, tb in batches(X, T, order, starts, batch_size):
        loss = forward_backward(net, xb, tb, f"at epoch {epoch}, step {step}")
        total_acc += batch_accuracy(net, tb)
        m = xb.shape[0]
        frac = m / (seen + m)  # weight by chunk size: a short last chunk counts right
        for a, g in zip(acc_grads, net.gradients(), strict=True):
            net.kernels.running_mean(a, g, frac)
        seen += m
        total_loss += loss * m
        bar.update()
    return acc_grads, total_loss, total_acc

"""The epochs of ``fit``: minibatch SGD and full-batch gradient descent, on
validated data (``X`` the network's dtype, ``T`` its targets) and checked state."""

import numpy as np

from fastnet._validation import kernel_ready
from fastnet._workspace import aligned_empty
from fastnet.training.steps import forward_backward, train_batch


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


def epoch_sgd(net, X, T, order, starts, batch_size, epoch, bar):
    """One epoch of minibatch steps; returns (mean loss, accuracy), each batch's
    measured before its update."""
    total_loss = total_acc = 0.0
    for step, xb, tb in batches(X, T, order, starts, batch_size):
        loss = train_batch(net, xb, tb, f"at epoch {epoch}, step {step}", x_max=net._x_max)
        total_acc += batch_accuracy(net, tb)  # from the outputs before the update
        total_loss += loss * xb.shape[0]
        bar.update()
    return total_loss / X.shape[0], total_acc / X.shape[0]


def epoch_gd(net, X, T, order, starts, batch_size, epoch, bar):
    """One full-batch step: the epoch's mean gradient (``gd_accumulate``), then one update."""
    acc_grads, total_loss, total_acc = gd_accumulate(net, X, T, order, starts, batch_size, epoch, bar)
    k = net.kernels
    g_maxes = [max(k.max_abs(acc_grads[2 * i]), k.max_abs(acc_grads[2 * i + 1]))
               for i in range(len(net.layers))]
    net._apply(acc_grads, f"at epoch {epoch}", g_maxes, 1)  # the state was checked by fit
    return total_loss / X.shape[0], total_acc / X.shape[0]


def gd_accumulate(net, X, T, order, starts, batch_size, epoch, bar):
    """The epoch's mean gradient (the network's buffers, in parameter order),
    loss sum and number correct, over chunks of ``batch_size`` as a running
    mean weighted by chunk size (no list of gradients is kept)."""
    params = net.parameters()
    if net._gd_acc is None or any(a.shape != p.shape for a, p in zip(net._gd_acc, params, strict=True)):
        net._gd_acc = [aligned_empty(p.shape, p.dtype) for p in params]
    acc_grads = net._gd_acc
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

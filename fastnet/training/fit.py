"""``fit``'s epochs: the history, the progress bar, the callbacks and each
epoch's validation, around the epochs of ``loop`` (or, under a communicator,
``fastnet.distributed.DataParallel``'s)."""

import sys
import time

from fastnet.backend import bar_notice
from fastnet.callbacks import call_hook, epoch_line
from fastnet.training.loop import epoch_gd, epoch_sgd


def fit_epochs(net, X, T, epochs, batch_size, mode, shuffle, rng, progress, verbose, callbacks,
               validate=None, dp=None):
    """Train ``net`` on validated data (``X`` of its dtype, ``T`` its targets)
    and checked state, as ``NeuralNetwork.fit`` has validated its arguments
    (``mode`` "sgd" or "gd", ``rng`` a Generator, ``callbacks`` a list), and
    return the history.  ``validate()``: the scores of the validation data
    (a dict, global under a communicator), or None for none; ``dp``: a
    ``fastnet.distributed.DataParallel``, or None in one process.

    The network's state is checked again at every epoch's start, after the
    callbacks' ``on_epoch_begin`` (``net.check()``: a callback may have
    replaced weights or the optimizer), against the data too; under ``dp``
    that check, the reduction buffer's binding (``DataParallel.rebind``), the
    update bounds taken from the arrays (so that every rank holds the same)
    and every callback hook run on all the ranks, which raise together and
    stop together."""
    comm = None if dp is None else dp.comm
    n = X.shape[0]
    starts = range(0, n, batch_size) if dp is None or mode == "gd" else dp.starts
    classifier = net.loss.is_classifier
    history = {"loss": []}
    if classifier:
        history["accuracy"] = []
    if validate is not None:
        history["val_loss"] = []
        if classifier:
            history["val_accuracy"] = []
    if dp is not None:
        history["allreduce_seconds"] = []

    if dp is None:
        epoch_run = epoch_sgd if mode == "sgd" else epoch_gd

        def run(*args):
            return epoch_run(net, *args)
    else:
        from fastnet import distributed

        run = dp.epoch_sgd if mode == "sgd" else dp.epoch_gd
    from tqdm.auto import tqdm  # here: importing it costs 0.08 s, and only fit shows a bar

    # delay: the bar appears only once the work has lasted a second ("long work")
    bar = tqdm(total=epochs * len(starts), disable=not progress, unit="batch", delay=1.0,
               desc="fit", leave=bool(verbose))
    printing = verbose and (dp is None or comm.Get_rank() == 0)

    def on_every_rank(compute, what):  # under comm: raised on every rank when it raised on any
        return compute() if dp is None else distributed.agree(comm, compute, what)

    def hook(name, *args):  # under comm: stop when any rank's callbacks ask to
        stop = on_every_rank(lambda: call_hook(callbacks, name, *args), "a callback")
        return stop if dp is None else bool(comm.allreduce(int(stop)))

    def check():
        net.check()
        if net.dtype != X.dtype or X.shape[1] != net.n_inputs or T.shape[1] != net.n_outputs:
            raise ValueError(f"fit's data has {X.shape[1]} inputs and {T.shape[1]} outputs per row in "
                             f"{X.dtype}, but the network now takes {net.n_inputs} and gives "
                             f"{net.n_outputs} in {net.dtype}: a callback changed its layers")
        if dp is not None:
            dp.rebind()
            # a change in one rank's process (its count of changes is its own) made its StepState,
            # and bounds, anew: every rank's from the same arrays now, the same bounds (8.7 us of a
            # 231 us epoch of 4-16-3 on iris, B = 32: not taken in one process)
            net.step_state.exact_bounds(net)

    hook("on_train_begin", net)
    try:
        with bar, bar_notice(bar, "fit"):
            for epoch in range(1, epochs + 1):
                logs = {"lr": net.optimizer.lr}
                hook("on_epoch_begin", epoch, logs)
                # the callbacks may have replaced state: the plans are made again from it
                on_every_rank(check, "the state at an epoch's start")
                started = time.perf_counter()
                order = rng.permutation(n) if shuffle else None
                loss, acc = run(X, T, order, starts, batch_size, epoch, bar)
                logs["loss"] = loss
                if classifier:
                    logs["accuracy"] = acc
                if validate is not None:
                    logs.update({"val_" + key: value for key, value in validate().items()})
                for key in history:
                    if key in logs:
                        history[key].append(logs[key])
                if dp is not None:
                    history["allreduce_seconds"].append(dp.allreduce_seconds)
                    dp.allreduce_seconds = 0.0
                logs["seconds"] = time.perf_counter() - started
                bar.set_postfix(epoch=epoch, loss=f"{loss:.4g}")
                if printing:
                    bar.write(epoch_line(epoch, epochs, logs), file=sys.stdout)
                if hook("on_epoch_end", epoch, logs):
                    break
    finally:
        hook("on_train_end", net)
    return history

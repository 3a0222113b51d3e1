"""Callbacks for ``NeuralNetwork.fit``: code run between epochs.

The protocol is small.  A callback is any object with

``on_epoch_end(epoch, logs) -> bool``
    called after every epoch (``epoch`` counts from 1) with ``logs``, a dict
    of that epoch's figures: ``loss``, ``accuracy`` (classification),
    ``val_loss``/``val_accuracy`` (with validation data), ``lr`` and
    ``seconds``.  Return True to stop training after this epoch.  The
    callbacks of one ``fit`` share one ``logs`` dict per epoch and run in the
    order given, so a callback may add a figure for the ones after it.

and optionally

``on_train_begin(network)``
    called once before the first epoch, with the network being trained;
``on_epoch_begin(epoch, logs)``
    called before every epoch (``logs`` holds ``lr``); the place to change
    ``network.optimizer.lr``;
``on_train_end(network)``
    called once after the last epoch, also when training stopped early or
    raised.

:class:`Callback` has all four, doing nothing, to subclass.  The parameters
and optimizer state are those of the last completed step whenever a callback
runs; a callback may change the optimizer's hyperparameters (they are checked
at the next step) or assign new parameter arrays to the layers.
"""

import math

import numpy as np

from fastnet._workspace import aligned_copy

__all__ = ["Callback", "EarlyStopping", "LearningRateScheduler", "check_callbacks"]


class Callback:
    """A callback that does nothing: subclass it and override what you need."""

    def on_train_begin(self, network):
        pass

    def on_epoch_begin(self, epoch, logs):
        pass

    def on_epoch_end(self, epoch, logs):
        return False

    def on_train_end(self, network):
        pass


def check_callbacks(callbacks):
    """``callbacks`` as a list, each checked to have ``on_epoch_end``."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks must be a list of callback objects, got {type(callbacks).__name__}")
    for i, cb in enumerate(callbacks):
        if not callable(getattr(cb, "on_epoch_end", None)):
            raise TypeError(f"callbacks[{i}] must have a method on_epoch_end(epoch, logs), got {cb!r}")
    return list(callbacks)


def call_hook(callbacks, name, *args):
    """Call ``name`` on every callback that has it; True when any asked to stop."""
    stop = False
    for cb in callbacks:
        hook = getattr(cb, name, None)
        if hook is not None and hook(*args):
            stop = True
    return stop


def _number(value, name, low=None):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (low is not None and value < low):
        raise ValueError(f"{name} must be a finite number >= {low}, got {value!r}")
    return value


class EarlyStopping(Callback):
    """Stop when a monitored figure has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : a key of the epoch's logs, "val_loss" by default (give
        ``validation_data`` or ``validation_split`` to ``fit``).
    patience : the number of epochs without improvement to wait (an int >= 1).
    min_delta : the least change that counts as an improvement (>= 0).
    restore_best : at the end of training, set the parameters back to those of
        the best epoch (when that was not the last one).
    mode : "min", "max", or "auto": "max" for figures whose name holds
        "acc" or "score", else "min".

    After ``fit``: ``best`` (the best value), ``best_epoch``, and
    ``stopped_epoch`` (0 when training ran to the end).
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, restore_best=True, mode="auto"):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a logged figure, got {monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {patience!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor, self.patience = monitor, int(patience)
        self.min_delta = _number(min_delta, "min_delta", 0.0)
        self.restore_best = bool(restore_best)
        if mode == "auto":
            mode = "max" if ("acc" in monitor or "score" in monitor) else "min"
        self.mode = mode
        self._reset(None)

    def _reset(self, network):
        self._network = network
        self.best, self.best_epoch, self.stopped_epoch = None, 0, 0
        self._wait, self._best_params, self._last_epoch = 0, None, 0

    def on_train_begin(self, network):
        self._reset(network)

    def on_epoch_end(self, epoch, logs):
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which this fit does not log; "
                             f"it logs {sorted(logs)}")
        value = float(logs[self.monitor])
        self._last_epoch = epoch
        sign = 1.0 if self.mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.best_epoch, self._wait = value, epoch, 0
            if self.restore_best and self._network is not None:
                self._best_params = [(aligned_copy(la.w), aligned_copy(la.b)) for la in self._network.layers]
            return False
        self._wait += 1
        if self._wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, network):
        if self.restore_best and self._best_params is not None and self.best_epoch != self._last_epoch:
            # new arrays, not writes into the old ones: the network sees its state
            # changed and checks it again before the next step
            for layer, (w, b) in zip(network.layers, self._best_params, strict=True):
                layer.w, layer.b = w, b
        self._best_params = None  # the copies are not kept beyond fit

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, restore_best={self.restore_best}, mode={self.mode!r})")


class LearningRateScheduler(Callback):
    """Set the learning rate before every epoch to ``schedule(epoch, lr)``.

    ``schedule`` is called with the epoch about to run (from 1) and the
    current learning rate, and returns the new one (a finite number > 0).  For
    example ``LearningRateScheduler(lambda epoch, lr: 0.1 * 0.95 ** (epoch - 1))``.
    """

    def __init__(self, schedule):
        if not callable(schedule):
            raise TypeError(f"schedule must be a callable (epoch, lr) -> lr, got {schedule!r}")
        self.schedule = schedule
        self._network = None

    def on_train_begin(self, network):
        self._network = network

    def on_epoch_begin(self, epoch, logs):
        lr = self.schedule(epoch, self._network.optimizer.lr)
        try:
            self._network.optimizer.lr = lr  # checked there (finite, > 0)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"LearningRateScheduler: the schedule returned {lr!r} for epoch {epoch}: "
                            f"{exc}") from None
        logs["lr"] = self._network.optimizer.lr

    def __repr__(self):
        return f"LearningRateScheduler({self.schedule!r})"


def held_out(fraction, n):
    """The number of samples of ``n`` that ``validation_split=fraction`` holds
    out: ``n - int(n * (1 - fraction))``, as Keras splits; both parts non-empty."""
    if isinstance(fraction, bool) or not isinstance(fraction, (float, int, np.floating, np.integer)):
        raise TypeError(f"validation_split must be a fraction in (0, 1), got {fraction!r}")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"validation_split must be a fraction in (0, 1), got {fraction!r}")
    k = n - int(n * (1.0 - float(fraction)))
    if k < 1 or k >= n:
        raise ValueError(f"validation_split={fraction!r} of {n} samples leaves "
                         f"{'no validation' if k < 1 else 'no training'} samples")
    return k


def epoch_line(epoch, epochs, logs):
    """The line ``fit(verbose=1)`` prints after an epoch, Keras-like:
    ``epoch 3/10 - 0.41 s - loss: 0.2134 - accuracy: 0.9312 - lr: 0.01``."""
    width = len(str(epochs))
    parts = [f"epoch {epoch:>{width}}/{epochs}", f"{logs['seconds']:.2f} s"]
    parts += [f"{key}: {value:.4g}" for key, value in logs.items()
              if key not in ("seconds", "lr") and isinstance(value, (int, float))]
    parts.append(f"lr: {logs['lr']:.4g}")
    return " - ".join(parts)

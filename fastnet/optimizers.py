"""Optimizers: SGD (with momentum, Nesterov and weight decay) and Adam.

An optimizer updates a list of parameter arrays in place from a list of
gradient arrays of the same shapes, through the backend's update kernels.  Its
state (velocities, moments, step count) is created at the first step and kept
in order of the parameters, so an optimizer belongs to one network.
"""

import numpy as np

from fastnet._validation import real_number


class Optimizer:
    """Base: hyperparameters are validated whenever they are set."""

    name = None

    def __init__(self, lr):
        self.lr = lr
        self.state = None

    @property
    def lr(self):
        """The learning rate: finite and >= 0."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = real_number(value, "learning rate (lr)", low=0.0)

    def step(self, kernels, params, grads):
        """Update ``params`` in place from ``grads`` with the ``kernels`` module."""
        if self.state is None:
            self.state = self._new_state(params)
        self._step(kernels, params, grads)

    def config(self):
        """Hyperparameters as a JSON-serialisable dict (for ``save``)."""
        raise NotImplementedError

    def reset(self):
        """Forget the state (velocities, moments, step count)."""
        self.state = None

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent.

    ``d = g + weight_decay * p``; with momentum ``v = momentum * v + d`` and the
    step is ``v`` (or ``d + momentum * v`` with ``nesterov``); ``p -= lr * step``.
    This is the form PyTorch uses.
    """

    name = "sgd"

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        self.momentum = real_number(momentum, "momentum", low=0.0, high=1.0, high_open=True)
        self.weight_decay = real_number(weight_decay, "weight_decay", low=0.0)
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.nesterov = nesterov

    def _new_state(self, params):
        if self.momentum == 0:  # no velocity to keep: an empty placeholder per parameter
            return [np.zeros((0,) * p.ndim, dtype=p.dtype) for p in params]
        return [np.zeros_like(p) for p in params]

    def _step(self, kernels, params, grads):
        for p, g, v in zip(params, grads, self.state, strict=True):
            kernels.sgd_step(p, g, v, self.lr, self.momentum, self.weight_decay, self.nesterov)

    def config(self):
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015), with optional L2 weight decay added to the gradient."""

    name = "adam"

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        self.beta1 = real_number(beta1, "beta1", low=0.0, high=1.0, high_open=True)
        self.beta2 = real_number(beta2, "beta2", low=0.0, high=1.0, high_open=True)
        self.eps = real_number(eps, "eps", low=0.0, low_open=True)
        self.weight_decay = real_number(weight_decay, "weight_decay", low=0.0)

    def _new_state(self, params):
        return {"t": 0, "m": [np.zeros_like(p) for p in params],
                "v": [np.zeros_like(p) for p in params]}

    def _step(self, kernels, params, grads):
        self.state["t"] += 1
        t = self.state["t"]
        for p, g, m, v in zip(params, grads, self.state["m"], self.state["v"], strict=True):
            kernels.adam_step(p, g, m, v, self.lr, self.beta1, self.beta2, self.eps,
                              self.weight_decay, t)

    def config(self):
        return {
            "lr": self.lr,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }


_BY_NAME = {"sgd": SGD, "adam": Adam}


def optimizer_from_config(name, config):
    """Rebuild an optimizer from ``name`` and ``config()`` (used by ``load``)."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(_BY_NAME)}")
    return _BY_NAME[name](**config)

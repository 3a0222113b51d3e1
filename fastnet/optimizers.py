"""Optimizers: SGD (with momentum, Nesterov and weight decay) and Adam.

An optimizer updates a list of parameter arrays in place from a list of
gradient arrays of the same shapes, through the backend's update kernels.  Its
state (velocities, moments, step count) is created at the first step and kept
in order of the parameters, so an optimizer belongs to one network: a step
with parameters of other shapes raises instead of touching the state.
"""

import numpy as np

from fastnet._validation import real_number
from fastnet._workspace import aligned_zeros, realigned


class _Hyper:
    """A hyperparameter validated whenever it is set (a failed set keeps the old value)."""

    def __init__(self, label, **bounds):
        self.label, self.bounds = label, bounds

    def __set_name__(self, owner, name):
        self.attr = "_" + name

    def __get__(self, obj, owner=None):
        return self if obj is None else getattr(obj, self.attr)

    def __set__(self, obj, value):
        setattr(obj, self.attr, real_number(value, self.label, **self.bounds))


class Optimizer:
    """Base: hyperparameters are validated whenever they are set."""

    name = None
    lr = _Hyper("learning rate (lr)", low=0.0)

    def __init__(self, lr):
        self.lr = lr
        self.state = None
        self._shapes = None

    def __setstate__(self, state):
        self.__dict__.update(realigned(state))  # copies of the state start on cache lines too

    def step(self, kernels, params, grads):
        """Update ``params`` in place from ``grads`` with the ``kernels`` module."""
        self.prepare(params)
        self._step(kernels, params, grads)

    def prepare(self, params):
        """Create the state for ``params`` at the first step, or check that it
        belongs to them (a fused training step calls this, then updates the
        parameters and the state itself)."""
        for i, p in enumerate(params):
            if not (isinstance(p, np.ndarray) and p.flags.c_contiguous and p.flags.writeable):
                got = (f"a {type(p).__name__}" if not isinstance(p, np.ndarray) else
                       "a read-only array" if not p.flags.writeable else "a non-C-contiguous array")
                raise ValueError(
                    f"parameter {i} must be a writeable C-contiguous ndarray (as a layer's build "
                    f"makes it), got {got}; assign np.ascontiguousarray(...) to the layer instead"
                )
        shapes = tuple(p.shape for p in params)
        if self.state is None:
            self.state, self._shapes = self._new_state(params), shapes
        elif shapes != self._shapes:
            raise ValueError(
                f"this optimizer's state belongs to parameters of shapes {self._shapes}, "
                f"got {shapes}; use one optimizer per network (or call reset())"
            )

    def config(self):
        """Hyperparameters as a JSON-serialisable dict (for ``save``)."""
        raise NotImplementedError

    def reset(self):
        """Forget the state (velocities, moments, step count)."""
        self.state = self._shapes = None

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent.

    ``d = g + weight_decay * p``; with momentum ``v = momentum * v + d`` and the
    step is ``v`` (or ``d + momentum * v`` with ``nesterov``); ``p -= lr * step``.
    This is the form PyTorch uses.  Momentum may be changed between steps;
    velocities start at zero when it first becomes non-zero.
    """

    name = "sgd"
    momentum = _Hyper("momentum", low=0.0, high=1.0, high_open=True)
    weight_decay = _Hyper("weight_decay", low=0.0)

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        self.momentum = momentum
        self.weight_decay = weight_decay
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.nesterov = nesterov

    def _new_state(self, params):
        return [self._velocity(p) for p in params]

    def _velocity(self, p):
        if self.momentum == 0:  # no velocity to keep: an empty placeholder
            return np.zeros((0,) * p.ndim, dtype=p.dtype)
        return aligned_zeros(p.shape, p.dtype)

    def prepare(self, params):
        super().prepare(params)
        if self.momentum != 0 and any(v.size == 0 for v in self.state):
            self.state = self._new_state(params)  # momentum switched on since the last step

    def _step(self, kernels, params, grads):
        for p, g, v in zip(params, grads, self.state, strict=True):
            kernels.sgd_step(p, g, v, self.lr, self.momentum, self.weight_decay,
                             bool(self.nesterov and self.momentum != 0))

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
    beta1 = _Hyper("beta1", low=0.0, high=1.0, high_open=True)
    beta2 = _Hyper("beta2", low=0.0, high=1.0, high_open=True)
    eps = _Hyper("eps", low=0.0, low_open=True)
    weight_decay = _Hyper("weight_decay", low=0.0)

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weight_decay = weight_decay

    def _new_state(self, params):
        return {"t": 0, "m": [aligned_zeros(p.shape, p.dtype) for p in params],
                "v": [aligned_zeros(p.shape, p.dtype) for p in params]}

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

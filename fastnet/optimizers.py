"""Optimizers: SGD (with momentum, Nesterov and weight decay) and Adam.

An optimizer updates a list of parameter arrays in place from a list of
gradient arrays of the same shapes, through the backend's update kernels.  Its
state (velocities, moments, step count) is created at the first step and kept
in order of the parameters, so an optimizer belongs to one network: a second
network refuses it, and a step with parameters, gradients or state of other
shapes, dtypes or layouts raises instead of touching anything.
"""

import weakref

import numpy as np

from fastnet._changes import Watched, changed
from fastnet._validation import describe, flag, real_number
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
        changed()  # the networks' checks look at it (``_changes``)


class _Flag(_Hyper):
    """A bool hyperparameter (a NumPy bool is taken as a bool), checked when set."""

    def __set__(self, obj, value):
        setattr(obj, self.attr, flag(value, self.label))
        changed()


class Optimizer:
    """Base: hyperparameters are validated whenever they are set."""

    name = None
    lr = _Hyper("learning rate (lr)", low=0.0)
    state = Watched()  # kept as a watched list or dict: a change in it counts (``_changes``)

    def __init__(self, lr):
        self.lr = lr
        self.state = None
        self._shapes = None
        self._owner = None  # a weak reference to the network this optimizer belongs to

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_owner"] = None  # a copied network claims its copy of the optimizer again
        return state

    def __setstate__(self, state):
        self.__dict__.update(realigned(state))  # copies of the state start on cache lines too

    def _claim(self, network):
        """Make ``network`` this optimizer's owner; refuse when another live one is."""
        owner = None if self._owner is None else self._owner()
        if owner is not None and owner is not network:
            raise ValueError(
                f"this {type(self).__name__} already belongs to another network: an optimizer keeps "
                f"state (velocities, moments) for the parameters of one network; create another, "
                f"e.g. {self!r}"
            )
        self._owner = weakref.ref(network)

    def _release(self, network):
        if self._owner is not None and self._owner() is network:
            self._owner = None

    def step(self, kernels, params, grads):
        """Update ``params`` in place from ``grads`` with the ``kernels`` module.

        ``params`` and ``grads`` are lists of arrays of one float dtype, the
        gradients of the parameters' shapes; everything the kernels will index
        is checked first (a refused step changes nothing)."""
        self.prepare(params)
        if not isinstance(grads, (list, tuple)) or len(grads) != len(params):
            raise ValueError(f"expected {len(params)} gradient arrays, one per parameter, got {grads!r:.80}")
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if not (isinstance(g, np.ndarray) and g.shape == p.shape and g.dtype == p.dtype
                    and g.flags.c_contiguous):
                got = describe(g) if isinstance(g, np.ndarray) else repr(g)
                raise ValueError(f"gradient {i} must be a C-contiguous {p.dtype} array of shape "
                                 f"{p.shape}, got {got}")
        self._step(kernels, params, grads)

    def prepare(self, params):
        """Create the state for ``params`` at the first step, or check that it
        belongs to them: every array of it of the parameters' shapes and
        dtype, C-contiguous and writeable (a fused training step calls this,
        then updates the parameters and the state itself)."""
        if not params:
            raise ValueError("an optimizer step needs at least one parameter array")
        dtype = params[0].dtype if isinstance(params[0], np.ndarray) else None
        for i, p in enumerate(params):
            if not (isinstance(p, np.ndarray) and p.flags.c_contiguous and p.flags.writeable):
                got = (f"a {type(p).__name__}" if not isinstance(p, np.ndarray) else
                       "a read-only array" if not p.flags.writeable else "a non-C-contiguous array")
                raise ValueError(
                    f"parameter {i} must be a writeable C-contiguous ndarray (as a layer's build "
                    f"makes it), got {got}; assign np.ascontiguousarray(...) to the layer instead"
                )
            if p.dtype != dtype or p.dtype not in _FLOATS:
                raise ValueError(f"parameters must share one float dtype (float32 or float64), got "
                                 f"{[str(q.dtype) for q in params]}")
        shapes = tuple(p.shape for p in params)
        if self.state is None:
            self.state, self._shapes = self._new_state(params), shapes
        elif shapes != self._shapes:
            raise ValueError(
                f"this optimizer's state belongs to parameters of shapes {self._shapes}, "
                f"got {shapes}; use one optimizer per network (or call reset())"
            )
        else:
            self._check_state(params)

    def _check_arrays(self, where, arrays, params, empty_ok=False):
        """Each of ``arrays`` (``where``: its name in the state) an array as the
        kernels need it beside its parameter; ``empty_ok``: or a size-0 placeholder."""
        if not isinstance(arrays, list) or len(arrays) != len(params):
            raise ValueError(f"optimizer.{where} must be a list of {len(params)} arrays, one per "
                             f"parameter, got {_short(arrays)}; call reset() to start the state again")
        for i, (a, p) in enumerate(zip(arrays, params, strict=True)):
            if (isinstance(a, np.ndarray) and a.dtype == p.dtype and a.flags.c_contiguous
                    and a.flags.writeable and (a.shape == p.shape or (empty_ok and a.size == 0))):
                continue
            got = describe(a) if isinstance(a, np.ndarray) else _short(a)
            if isinstance(a, np.ndarray) and not (a.flags.c_contiguous and a.flags.writeable):
                got = "a read-only or non-C-contiguous " + got
            raise ValueError(f"optimizer.{where}[{i}] must be a writeable C-contiguous {p.dtype} array "
                             f"of shape {p.shape}, got {got}; call reset() to start the state again")

    def check_representable(self, dtype):
        """Refuse hyperparameters that ``dtype`` (the network's) cannot hold:
        values that round to inf, or a positive ``eps`` that rounds to 0."""
        info = np.finfo(dtype)
        for name, value in self.config().items():
            if isinstance(value, bool):
                continue
            if abs(value) > float(info.max):
                raise ValueError(f"{name}={value!r} is beyond the range of {info.dtype} (largest "
                                 f"{float(info.max):.4g}), the network's dtype: it would be inf there")
            if name == "eps" and info.dtype.type(value) == 0:
                raise ValueError(f"eps={value!r} is 0 in {info.dtype}, the network's dtype (the "
                                 f"smallest positive is {float(info.smallest_subnormal):.4g})")

    def config(self):
        """Hyperparameters as a JSON-serialisable dict (for ``save``)."""
        raise NotImplementedError

    def reset(self):
        """Forget the state (velocities, moments, step count)."""
        self.state = self._shapes = None

    def set_state(self, state, params):
        """Take ``state`` (another replica's, as distributed training broadcasts
        rank 0's; None: no state yet) as the state of ``params``, checked as
        ``prepare`` checks it before it is installed: a ValueError when it does
        not fit them, and this optimizer's state as it was.  Its arrays are
        taken, not copied, except those not on cache lines (``realigned``)."""
        if state is None:
            self.reset()
            return
        probe = object.__new__(type(self))  # the hyperparameters the check reads, and the candidate
        probe.__dict__.update(self.__dict__)
        probe.__dict__.update(state=realigned(state), _shapes=tuple(p.shape for p in params))
        probe.prepare(params)
        self.state, self._shapes = probe.state, probe._shapes

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _short(value):
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


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
    nesterov = _Flag("nesterov")

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        self.momentum = momentum
        self.weight_decay = weight_decay
        nesterov = flag(nesterov, "nesterov")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.nesterov = nesterov

    def _new_state(self, params):
        return [self._velocity(p) for p in params]

    def _velocity(self, p):
        if self.momentum == 0:  # no velocity to keep: an empty placeholder
            return np.zeros((0,) * p.ndim, dtype=p.dtype)
        return aligned_zeros(p.shape, p.dtype)

    def _check_state(self, params):
        st = self.state
        if (self.momentum != 0 and isinstance(st, list) and len(st) == len(params)
                and all(isinstance(v, np.ndarray) and v.size == 0 for v in st)):
            self.state = self._new_state(params)  # momentum switched on since the last step
            return
        # with momentum, a placeholder left among velocities is tampered state, not a switch
        self._check_arrays("state", st, params, empty_ok=self.momentum == 0)

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

    def _check_state(self, params):
        st = self.state
        if not isinstance(st, dict) or set(st) != {"t", "m", "v"}:
            raise ValueError(f"optimizer.state must be a dict with keys 't', 'm' and 'v', got {_short(st)}; "
                             "call reset() to start the state again")
        t = st["t"]
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"optimizer.state['t'] must be the number of steps taken, an int >= 0, "
                             f"got {_short(t)}")
        self._check_arrays("state['m']", st["m"], params)
        self._check_arrays("state['v']", st["v"], params)

    def next_t(self):
        """The count the next update will have, ``state["t"] + 1``, once ``t`` is
        checked: the one piece of the state that changes every step, which the
        networks' checks of the state skip.  The state must exist (``prepare``)."""
        t = self.state["t"]
        if type(t) is not int or t < 0:
            raise ValueError(f"optimizer.state['t'] must be the number of steps taken, an int >= 0, "
                             f"got {_short(t)}")
        return t + 1

    def _step(self, kernels, params, grads):
        t = self.next_t()
        dict.__setitem__(self.state, "t", t)  # not a change to what the networks check (``_changes``)
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

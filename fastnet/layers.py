"""The dense (fully-connected) layer."""

import numbers

import numpy as np

from fastnet._changes import Watched, changed
from fastnet._validation import as_float_batch, describe, positive_int, random_generator
from fastnet._workspace import aligned_copy, aligned_empty, rows
from fastnet.activations import get_activation, kernel_code
from fastnet.backend import HoldsKernels, kernels_for, resolve_backend
from fastnet.init import WeightInit, get_init
from fastnet.kernels import ACTIVATION_CODES

_IDENTITY = ACTIVATION_CODES["identity"]


def float_dtype(dtype):
    """np.dtype(dtype) when it is float32 or float64; a ValueError otherwise."""
    dt = None
    if dtype is not None:  # np.dtype(None) would be float64
        try:
            dt = np.dtype(dtype)
        except TypeError:
            pass
    # dt is None first: a dtype compares equal to None (as float64).
    if dt is None or dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


class DenseLayer(HoldsKernels):
    """A fully-connected layer: ``a = x @ w + b``, ``y = f(a)``.

    Parameters
    ----------
    activation : Activation, str or object with ``f`` and ``df``
        The activation, e.g. ``ReLU()`` or ``"relu"``.
    input_size_info : int, layer or None
        The number of inputs, or the previous layer (anything with
        ``neurons_num``).  ``None`` leaves the layer unbuilt until a
        ``NeuralNetwork`` gives it the previous layer's size.
    init_func : callable or str
        A ``WeightInit`` function (default ``xavier_init_gauss``) or its name.
    neurons_num : int
        The number of neurons (outputs).
    dtype : float32 (default) or float64
        The precision of the parameters and of every computation.
    rng : None, int or numpy.random.Generator
        The source of the initial weights; a seed makes them reproducible.
    backend : None, "auto", "numpy" or "numba"
        Which kernels compute; None is ``fastnet.get_default_backend()``.

    Attributes
    ----------
    w : (n_inputs, neurons_num) array;  b : (1, neurons_num) array.
    x, a, y : the last forward pass's input, pre-activation and output.
    dw, db, dx : the gradients from the last ``backward_pass``.

    Notes
    -----
    ``dy`` given to ``backward_pass`` holds, row by row, the gradient of each
    sample's loss with respect to that sample's output.  The loss of the
    batch is the mean of the per-sample losses, so ``dw = x.T @ dz / B`` and
    ``db = mean(dz, axis=0)`` with ``dz = dy * f'(a)``: the gradients of the
    batch loss.  ``dx = dz @ w.T`` is per sample again, ready to be the ``dy``
    of the layer below.

    ``a``, ``y``, ``dx``, ``dw`` and ``db`` are buffers the layer owns and
    reuses (grown to the largest batch seen): a later pass overwrites them, so
    copy what you want to keep.  ``x`` is kept by reference.  A copy of the
    layer (``copy.deepcopy``, pickle) has its parameters and settings but none
    of these: they are None until its next pass.  A layer, like a
    network, is not safe to use from several threads at once.
    ``forward_pass`` and ``backward_pass`` refuse arrays of another float
    dtype rather than cast them (``NeuralNetwork`` casts, see there).
    """

    _CACHES = ("_x", "_a", "_y", "_dz", "_dw", "_db", "_dx")  # not copied (HoldsKernels)
    # what a network's plan is made from: an assignment counts as a change (``_changes``)
    w, b, neurons_num, n_inputs, dtype = Watched(), Watched(), Watched(), Watched(), Watched()

    def __init__(
        self,
        activation,
        input_size_info=None,
        init_func=WeightInit.xavier_init_gauss,
        neurons_num=100,
        *,
        dtype=np.float32,
        rng=None,
        backend=None,
    ):
        self.activation = activation
        self.neurons_num = positive_int(neurons_num, "neurons_num")
        self.init_func = get_init(init_func)
        self.dtype = float_dtype(dtype)
        self.rng = random_generator(rng)
        self.backend = backend
        self.n_inputs = None
        self.w = self.b = None
        self._clear_caches()
        if input_size_info is not None:
            self.build(input_size_info)

    # -- construction -------------------------------------------------------
    @property
    def activation(self):
        """The activation object; a name such as ``"relu"`` or an object with
        ``f`` and ``df`` may be assigned (checked at once)."""
        return self._activation

    @activation.setter
    def activation(self, spec):
        self._activation = get_activation(spec)
        changed()

    x = property(lambda self: self._x, doc="The last forward pass's input (held by reference).")
    a = property(lambda self: self._a, doc="The last forward pass's pre-activation (a workspace).")
    y = property(lambda self: self._y, doc="The last forward pass's output (a workspace).")
    dz = property(lambda self: self._dz, doc="The last backward pass's dL/da per sample (a workspace).")
    dw = property(lambda self: self._dw, doc="The last backward pass's weight gradient (a workspace).")
    db = property(lambda self: self._db, doc="The last backward pass's bias gradient (a workspace).")
    dx = property(lambda self: self._dx, doc="The last backward pass's input gradient (a workspace).")

    @property
    def backend(self):
        """The concrete backend computing this layer (``"numpy"`` or ``"numba"``)."""
        return self._backend

    @backend.setter
    def backend(self, name):
        self._backend = resolve_backend(name)
        self._k = kernels_for(self._backend)
        changed()

    @property
    def built(self):
        return self.w is not None

    def build(self, input_size_info):
        """Set the number of inputs (an int or the previous layer) and initialise
        the parameters with ``init_func``."""
        if isinstance(input_size_info, numbers.Integral) and not isinstance(input_size_info, bool):
            n_inputs = positive_int(input_size_info, "input_size_info")
        elif hasattr(input_size_info, "neurons_num"):
            n_inputs = positive_int(input_size_info.neurons_num, "input_size_info.neurons_num")
        else:
            raise TypeError(
                "input_size_info must be a positive int or a layer with neurons_num, "
                f"got {input_size_info!r}"
            )
        before = (self.n_inputs, self.w, self.b)
        self.n_inputs = n_inputs
        try:
            self.init_func(self)
            self._check_params("init_func must set {name} to")
        except BaseException:
            self.n_inputs, self.w, self.b = before  # a failed build leaves the layer as it was
            raise
        self.w = aligned_copy(self.w)  # the layer's own, C-contiguous and 64-byte aligned
        self.b = aligned_copy(self.b)
        self._clear_caches()
        return self

    def _check_params(self, says="the layer's {name} must be"):
        """Raise ValueError unless w and b are arrays of the layer's dtype and
        shapes, as the kernels, which index them unchecked, need (weights
        assigned by hand included); ``says`` starts the message."""
        expected = {"w": (self.n_inputs, self.neurons_num), "b": (1, self.neurons_num)}
        for name, shape in expected.items():
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != self.dtype:
                got = describe(arr) if isinstance(arr, np.ndarray) else repr(arr)
                raise ValueError(f"{says.format(name=name)} a {self.dtype} array of shape {shape}, got {got}")

    def _clear_caches(self):
        self._x = self._a = self._y = None
        self._dz = self._dw = self._db = self._dx = None
        self._store = {}  # workspace name -> array with room for the largest batch so far

    def _workspace(self, name, batch, width):
        return rows(self._store, name, batch, width, self.dtype)

    def _buffers(self, batch):
        """Point a, y and dz at workspaces for this batch size, and return them
        ``(a, y, dz)`` (``fastnet.training``: the arrays a fused step writes)."""
        if self._a is None or self._a.shape != (batch, self.neurons_num) or self._a.dtype != self.dtype:
            self._a = self._workspace("a", batch, self.neurons_num)
            self._y = self._workspace("y", batch, self.neurons_num)
            self._dz = self._workspace("dz", batch, self.neurons_num)
        if self._dw is None or self._dw.shape != self.w.shape:
            # kept in the store: a fused step hides them, never frees them
            dw = self._store.get("dw")
            if dw is None or dw.shape != self.w.shape or dw.dtype != self.dtype:  # new or resized layer
                dw = self._store["dw"] = aligned_empty(self.w.shape, self.dtype)
                self._store["db"] = aligned_empty(self.b.shape, self.dtype)
            self._dw, self._db = dw, self._store["db"]
        return self._a, self._y, self._dz

    def _show_pass(self, x, a, y, dz, gradients=False):
        """A pass computed outside the layer (``fastnet.training``'s fused step)
        into the arrays of ``_buffers``: x, a, y and dz are those; dw and db
        the arrays ``gradients_into`` gave when ``gradients`` (the step wrote
        them), else None, as is dx."""
        self._x, self._a, self._y, self._dz = x, a, y, dz
        self._dx = None
        self._dw, self._db = (self._store.get("dw"), self._store.get("db")) if gradients else (None, None)

    def gradients_into(self, dw, db):
        """Have the backward passes write ``dw`` and ``db`` into these arrays
        (C-contiguous, of w's and b's shapes and the layer's dtype), until the
        layer's shapes change; distributed training points them into its
        reduction buffer, so the gradients need no copy."""
        for name, arr, like in (("dw", dw, self.w), ("db", db, self.b)):
            if not (isinstance(arr, np.ndarray) and arr.shape == like.shape and arr.dtype == self.dtype
                    and arr.flags.c_contiguous and arr.flags.writeable):
                got = describe(arr) if isinstance(arr, np.ndarray) else repr(arr)
                raise ValueError(f"{name} must be a writeable C-contiguous {self.dtype} array of shape "
                                 f"{like.shape}, got {got}")
        self._store["dw"], self._store["db"] = dw, db
        self._dw = self._db = None  # _buffers picks them up

    # -- passes ---------------------------------------------------------------
    def forward_pass(self, x):
        """Compute ``y = f(x @ w + b)`` for a (batch, n_inputs) array; returns ``y``."""
        self._require_built()
        x = as_float_batch(x, self.n_inputs, self.dtype, name="x", cast=False)
        return self._forward(x)

    def backward_pass(self, dy, compute_dx=True):
        """Backpropagate the per-sample loss gradient ``dy`` (batch, neurons_num).

        Sets ``dw``, ``db`` (averaged over the batch) and, when ``compute_dx``,
        ``dx`` (per sample), which it returns; the first layer of a network
        skips ``dx``, a third of the backward arithmetic.
        """
        if self._x is None:
            raise ValueError("backward_pass called before forward_pass: there is no cached input")
        dy = as_float_batch(dy, self.neurons_num, self.dtype, name="dy", cast=False)
        if dy.shape[0] != self._x.shape[0]:
            raise ValueError(
                f"dy has {dy.shape[0]} rows but the last forward pass had {self._x.shape[0]}"
            )
        return self._backward(dy, compute_dx)

    def _forward(self, x):
        """Forward on validated input (C-contiguous, right shape and dtype)."""
        self._check_params()
        if x.shape[1] != self.n_inputs or x.dtype != self.dtype:
            raise ValueError(  # the layer below was changed since the network was built
                f"this layer takes {self.dtype} rows of {self.n_inputs} inputs, got {describe(x)} "
                "from the layer below")
        self._buffers(x.shape[0])
        self._x = x
        code = kernel_code(self.activation)
        if code is not None:
            return self._k.dense_forward(x, self.w, self.b, code, self.activation.alpha,
                                         self._a, self._y)
        # A user-defined activation object: the kernels do the affine part.
        self._k.dense_forward(x, self.w, self.b, _IDENTITY, 0.0, self._a, self._a)
        self._y[...] = self.activation.f(self._a)
        return self._y

    def _backward(self, dy, compute_dx=True):
        """Backward on validated input; requires a forward pass on this batch."""
        self._check_params()  # w may have been replaced since the forward pass
        self._buffers(dy.shape[0])
        code = kernel_code(self.activation)
        if code is None:  # user-defined activation: chain its derivative in here
            dy = np.ascontiguousarray(dy * self.activation.df(self._a), dtype=self.dtype)
            code, alpha = _IDENTITY, 0.0
        else:
            alpha = self.activation.alpha
        self._k.dense_backward(self._x, self._a, self._y, dy, code, alpha,
                               self._dz, self._dw, self._db)
        if not compute_dx:
            self._dx = None
            return None
        self._dx = self._workspace("dx", dy.shape[0], self.n_inputs)
        return self._k.input_grad(self._dz, self.w, self._dx)

    def _require_built(self):
        if not self.built:
            raise ValueError(
                "the layer has no input size yet: pass input_size_info or put it in a NeuralNetwork"
            )

    # -- parameters -------------------------------------------------------------
    def parameters(self):
        """The parameter arrays ``[w, b]`` (updated in place by optimizers)."""
        return [self.w, self.b]

    def gradients(self):
        """The gradient arrays ``[dw, db]`` of the last backward pass."""
        return [self._dw, self._db]

    def __repr__(self):
        return (
            f"DenseLayer({self.activation!r}, {self.n_inputs}, neurons_num={self.neurons_num}, "
            f"dtype={self.dtype.name}, backend={self.backend!r})"
        )

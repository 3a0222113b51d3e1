"""What a network checks before its kernels run: its state, whenever any of it was
replaced, and every training step's update before any is applied.

``StateChecks`` is a part of ``NeuralNetwork`` (a mixin: it works on the
network's own attributes); its methods are described there, under "Notes".
"""

import math

import numpy as np

from fastnet._changes import COUNT
from fastnet._validation import positive_int
from fastnet.activations import Identity
from fastnet.layers import DenseLayer
from fastnet.optimizers import SGD, Adam, Optimizer


class StateChecks:
    """The checks of ``NeuralNetwork``: the execution plan's state (``_checked``)
    and the update bounds (``_check_updates``)."""

    def _will_check(self):
        """Whether the next ``_checked`` looks at the whole state (the first
        step, or something changed since the last check)."""
        return COUNT.n != self._checked_at

    def _checked(self):
        """Check the whole state (``_check_state``) when anything it is made of
        was assigned or changed in place anywhere since the last check that
        passed (``fastnet._changes``); one comparison otherwise.  The count is
        read before the check, so a change made during it is looked at next time."""
        count = COUNT.n
        if count == self._checked_at:
            return
        self._checked_at = None
        self._plans = {}  # made again for the state as it is now
        self._check_state()
        self._exact_bounds()
        self._checked_at = count

    def _check_state(self, optimizer=True):
        """The construction rules and every array the kernels index, checked
        again: the layers (DenseLayers, none twice, built, their parameters'
        shapes and dtype, adjacent widths, one dtype), the loss against the
        last activation, and with ``optimizer`` the optimizer (this network's,
        hyperparameters the dtype can hold) and its state (made at the first
        step).  Raises before anything is changed."""
        layers = self.layers
        if not isinstance(layers, list) or not layers:
            raise TypeError(f"network.layers must be a non-empty list of DenseLayers, got {layers!r:.80}")
        dtype = None
        for i, la in enumerate(layers):
            if not isinstance(la, DenseLayer):
                raise TypeError(f"network.layers[{i}] must be a DenseLayer, got {la!r:.80}")
            for j in range(i):
                if layers[j] is la:
                    raise ValueError(_twice(j, i))
            for name in ("neurons_num", "n_inputs"):
                positive_int(getattr(la, name), f"layers[{i}].{name}")
            dtype = la.dtype if dtype is None else dtype
            if la.dtype != dtype:
                raise ValueError(f"all layers must share one dtype: layers[0] is {dtype}, "
                                 f"layers[{i}] is {la.dtype!r}")
            la._check_params(f"layers[{i}].{{name}} must be")
            if i and la.n_inputs != layers[i - 1].neurons_num:
                raise ValueError(f"layers[{i}] takes {la.n_inputs} inputs but layers[{i - 1}] has "
                                 f"{layers[i - 1].neurons_num} neurons")
        _check_logits(self._loss, layers[-1])
        if not optimizer:
            return
        opt = self._optimizer
        owner = None if opt._owner is None else opt._owner()
        if owner is not self:
            opt._claim(self)  # raises when another network has it (a shallow copy shares it)
        opt.check_representable(dtype)
        if opt.state is not None:  # made by the first step that is applied (_make_state)
            opt.prepare(self.parameters())

    def _make_state(self):
        """Make the optimizer's state if it has none yet: at the first update
        applied, never at a refused call (``_check_state`` leaves it to this)."""
        if self._optimizer.state is None:
            self._optimizer.prepare(self.parameters())
            self._checked()  # the state is part of what is checked

    def _apply(self, grads, where, g_maxes, sums, rescanned=None):
        """The optimizer's update from ``grads`` (the layers' or the network's
        own arrays), on state ``_checked`` has checked (not checked again,
        unless a subclass brings a ``step`` of its own), once every layer's
        update is known to be safe (``_check_updates``; ``g_maxes``, ``sums``,
        ``rescanned`` as there)."""
        opt = self._optimizer
        self._make_state()  # fit's full-batch mode: the first update
        after = self._check_updates(where, g_maxes, sums, rescanned)
        if type(opt).step is Optimizer.step:
            opt._step(self._k, self.parameters(), grads)
        else:
            opt.step(self._k, self.parameters(), grads)
        self._bounds[...] = after

    def _check_updates(self, where, g_maxes, sums, rescanned=None, exact=False):
        """The parameter and state bounds after this step's updates, when every
        layer's update is safe (``kernels.sgd_update_bound``: no value it forms
        can overflow); otherwise ``FloatingPointError``, and nothing changed.
        ``g_maxes``: a bound on each layer's gradient; ``sums``: how many terms
        its largest sums add (the batch, or 1 for a gradient given whole).  A
        refusal on the bounds the steps carry forward is looked at again on the
        exact ones (a pass over the parameters and state; ``rescanned()``, when
        given, the gradients' bounds with the batch's own input scanned, not the
        data set's bound) before it stands."""
        opt, k = self._optimizer, self._k
        big, limit = k.safe_limits(self.dtype)
        bounds, m_bounds = self._bounds, self._m_bounds
        after = np.empty_like(bounds)
        for i in range(len(self.layers) - 1, -1, -1):
            g = g_maxes[i]
            if isinstance(opt, SGD):  # subclasses are taken to keep SGD's rule
                safe, after[i, 0], after[i, 1] = k.sgd_update_bound(
                    g, sums * g, bounds[i, 0], bounds[i, 1], opt.lr, opt.momentum, opt.weight_decay,
                    bool(opt.nesterov and opt.momentum != 0), big, limit)
            elif isinstance(opt, Adam):
                safe, after[i, 0], m, after[i, 1] = k.adam_update_bound(
                    g, sums * g, bounds[i, 0], m_bounds[i], bounds[i, 1], opt.lr, opt.beta1, opt.beta2,
                    opt.eps, opt.weight_decay, opt._next_t(), big, limit)
                m_bounds[i] = max(m_bounds[i], m)  # a bound either way: kept even if refused below
            else:  # an optimizer of the user's: its rule is unknown here
                safe = math.isfinite(g) and sums * g <= big
                after[i] = np.inf
            if not safe:
                if not exact:
                    self._exact_bounds()
                    g_exact = g_maxes if rescanned is None else rescanned()
                    return self._check_updates(where, g_exact, sums, exact=True)
                _refuse_update(where, i, g, self.dtype)
        return after

    def _exact_bounds(self):
        """The bounds of ``_check_updates``, from the arrays: each layer's
        largest parameter and state magnitudes."""
        k, opt, layers = self._k, self._optimizer, self.layers
        n = len(layers)
        self._bounds, self._m_bounds = np.zeros((n, 2)), np.zeros(n)
        st = opt.state
        for i, la in enumerate(layers):
            self._bounds[i, 0] = max(k.max_abs(la.w), k.max_abs(la.b))
            if isinstance(st, list) and len(st) == 2 * n:
                self._bounds[i, 1] = max(k.max_abs(st[2 * i]), k.max_abs(st[2 * i + 1]))
            elif isinstance(st, dict) and len(st.get("m", ())) == 2 * n:
                self._bounds[i, 1] = max(k.max_abs(st["v"][2 * i]), k.max_abs(st["v"][2 * i + 1]))
                self._m_bounds[i] = max(k.max_abs(st["m"][2 * i]), k.max_abs(st["m"][2 * i + 1]))

    def _grad_bounds(self, x_max=None):
        """Bounds on each layer's gradient after a backward pass: its dz's
        largest magnitude times its input's (at least 1: the bias's "input"),
        both scanned; ``x_max``, when given, bounds the first layer's input
        (train_step: from its check; fit: the data set's).

        Scanned, not bounded from the forward arithmetic: the bounds feed the
        parameters' bounds of the next step, and bounds of bounds grow
        geometrically (measured: refusals to look at again every 7th step)."""
        k, out = self._k, []
        for i, la in enumerate(self.layers):
            x_i = x_max if i == 0 and x_max is not None else k.max_abs(la._x)
            out.append(k.max_abs(la._dz) * max(x_i, 1.0))
        return out


def _twice(j, i):
    return (f"layers[{j}] and layers[{i}] are the same DenseLayer object; each position needs a layer "
            "of its own (its own weights and gradients): create another DenseLayer")


def _check_optimizer_type(optimizer):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an Optimizer such as SGD(0.01), got {optimizer!r:.80}")


def _check_logits(loss, last):
    if loss.takes_logits and type(last.activation) is not Identity:
        # softmax(z) - t is the gradient with respect to the logits z; chaining
        # another activation's derivative on top would be wrong.
        raise ValueError(
            f"{type(loss).__name__} takes logits: the last layer's activation must be "
            f"'identity', got {last.activation!r}"
        )


def _refuse_update(where, i, g_max, dtype):
    grad = "" if g_max is None else f" (its gradient reaches {g_max:.3g})"
    raise FloatingPointError(
        f"training diverged {where}: the update of layers[{i}] could overflow {dtype}{grad}; no "
        "parameter or optimizer state was changed. Try a smaller learning rate or check the data.")

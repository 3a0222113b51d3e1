"""What a network's training steps carry from one step to the next, and the
checked update of the layered path.

A ``StepState`` is made from a network's state once that state is checked
(``NeuralNetwork.step_state``; the checks are ``fastnet._checks``), and made
anew whenever anything of it changes (``fastnet._changes``), so what the
compiled steps are given always comes from a checked snapshot:

* ``bounds``, ``m_bounds``: per layer, bounds on the largest magnitudes of its
  parameters and optimizer state, from which every step's update is checked
  before any is applied (``check_updates``), carried forward by the steps and
  taken from the arrays again (``exact_bounds``) when a step's update would be
  refused on them, at every ``fit`` and whenever the state is made anew;
* ``plans``: batch size -> how a step runs (``paths.execution_plan``);
* ``x_max``: ``fit``'s bound on its data set's magnitudes;
* workspaces (``workspace``, ``gd_buffers``), handed on to the next state.
"""

import math

import numpy as np

from fastnet._workspace import aligned_empty, rows
from fastnet.optimizers import SGD, Adam, Optimizer


class StepState:
    """The update bounds, execution plans and workspaces of one network's steps,
    for its state as it was checked (see the module's docstring).  ``previous``:
    the state this one replaces, whose workspaces and ``x_max`` it takes on."""

    def __init__(self, net, previous=None):
        n = len(net.layers)
        self.bounds = np.zeros((n, 2))  # per layer: parameters, optimizer state (Adam's v)
        self.m_bounds = np.zeros(n)  # per layer: Adam's m
        self.plans = {}
        self.x_max = None if previous is None else previous.x_max
        self.dtype = net.dtype
        self._store = {} if previous is None else previous._store
        self._gd = None if previous is None else previous._gd
        self.exact_bounds(net)

    def workspace(self, name, batch, width):
        """The first ``batch`` rows of a (rows, ``width``) workspace of the steps."""
        return rows(self._store, name, batch, width, self.dtype)

    def gd_buffers(self, params):
        """Buffers of the parameters' shapes and dtype for full-batch mode's mean gradient."""
        if self._gd is None or any(a.shape != p.shape or a.dtype != p.dtype
                                   for a, p in zip(self._gd, params, strict=True)):
            self._gd = [aligned_empty(p.shape, p.dtype) for p in params]
        return self._gd

    def exact_bounds(self, net):
        """The bounds taken from the arrays: each layer's largest parameter and
        state magnitudes."""
        k, st, layers = net.kernels, net.optimizer.state, net.layers
        n = len(layers)
        self.bounds[...] = 0
        self.m_bounds[...] = 0
        for i, la in enumerate(layers):
            self.bounds[i, 0] = max(k.max_abs(la.w), k.max_abs(la.b))
            if isinstance(st, list) and len(st) == 2 * n:
                self.bounds[i, 1] = max(k.max_abs(st[2 * i]), k.max_abs(st[2 * i + 1]))
            elif isinstance(st, dict) and len(st.get("m", ())) == 2 * n:
                self.bounds[i, 1] = max(k.max_abs(st["v"][2 * i]), k.max_abs(st["v"][2 * i + 1]))
                self.m_bounds[i] = max(k.max_abs(st["m"][2 * i]), k.max_abs(st["m"][2 * i + 1]))

    def grad_bounds(self, net, x_max=None):
        """Bounds on each layer's gradient after a backward pass: its dz's
        largest magnitude times its input's (at least 1: the bias's "input"),
        both scanned; ``x_max``, when given, bounds the first layer's input
        (train_step: from its check; fit: the data set's).

        Scanned, not bounded from the forward arithmetic: the bounds feed the
        parameters' bounds of the next step, and bounds of bounds grow
        geometrically (measured: refusals to look at again every 7th step)."""
        k, out = net.kernels, []
        for i, la in enumerate(net.layers):
            x_i = x_max if i == 0 and x_max is not None else k.max_abs(la.x)
            out.append(k.max_abs(la.dz) * max(x_i, 1.0))
        return out

    def check_updates(self, net, where, g_maxes, sums, rescanned=None, exact=False):
        """The parameter and state bounds after this step's updates, when every
        layer's update is safe (``kernels.sgd_update_bound``: no value it forms
        can overflow); otherwise ``FloatingPointError``, and nothing changed.
        ``g_maxes``: a bound on each layer's gradient; ``sums``: how many terms
        its largest sums add (the batch, or 1 for a gradient given whole).  A
        refusal on the bounds the steps carry forward is looked at again on the
        exact ones (a pass over the parameters and state; ``rescanned()``, when
        given, the gradients' bounds with the batch's own input scanned, not the
        data set's bound) before it stands."""
        opt, k = net.optimizer, net.kernels
        big, limit = k.safe_limits(net.dtype)
        bounds, m_bounds = self.bounds, self.m_bounds
        after = np.empty_like(bounds)
        for i in range(len(net.layers) - 1, -1, -1):
            g = g_maxes[i]
            if isinstance(opt, SGD):  # subclasses are taken to keep SGD's rule
                safe, after[i, 0], after[i, 1] = k.sgd_update_bound(
                    g, sums * g, bounds[i, 0], bounds[i, 1], opt.lr, opt.momentum, opt.weight_decay,
                    bool(opt.nesterov and opt.momentum != 0), big, limit)
            elif isinstance(opt, Adam):
                safe, after[i, 0], m, after[i, 1] = k.adam_update_bound(
                    g, sums * g, bounds[i, 0], m_bounds[i], bounds[i, 1], opt.lr, opt.beta1, opt.beta2,
                    opt.eps, opt.weight_decay, opt.next_t(), big, limit)
                m_bounds[i] = max(m_bounds[i], m)  # a bound either way: kept even if refused below
            else:  # an optimizer of the user's: its rule is unknown here
                safe = math.isfinite(g) and sums * g <= big
                after[i] = np.inf
            if not safe:
                if not exact:
                    self.exact_bounds(net)
                    g_exact = g_maxes if rescanned is None else rescanned()
                    return self.check_updates(net, where, g_exact, sums, exact=True)
                refuse_update(where, i, g, net.dtype)
        return after

    def apply(self, net, grads, where, g_maxes, sums, rescanned=None):
        """The optimizer's update from ``grads`` (the layers' or the network's
        own arrays), on checked state (not checked again, unless a subclass
        brings a ``step`` of its own), once every layer's update is known to be
        safe (``check_updates``; ``g_maxes``, ``sums``, ``rescanned`` as there)."""
        opt = net.optimizer
        after = self.check_updates(net, where, g_maxes, sums, rescanned)
        if type(opt).step is Optimizer.step:
            opt._step(net.kernels, net.parameters(), grads)
        else:
            opt.step(net.kernels, net.parameters(), grads)
        self.bounds[...] = after


def made_state(net):
    """``net``'s ``StepState``, after making the optimizer's state if it has
    none yet: at the first update applied, never at a refused call (the
    checks leave it to this).  The state is part of what is checked, so a
    ``StepState`` made before may be replaced: use the one returned."""
    if net.optimizer.state is None:
        net.optimizer.prepare(net.parameters())
        net.check()
    return net.step_state


def refuse_update(where, i, g_max, dtype):
    """``FloatingPointError``: layer ``i``'s update ``where`` could overflow ``dtype``."""
    grad = "" if g_max is None else f" (its gradient reaches {g_max:.3g})"
    raise FloatingPointError(
        f"training diverged {where}: the update of layers[{i}] could overflow {dtype}{grad}; no "
        "parameter or optimizer state was changed. Try a smaller learning rate or check the data.")

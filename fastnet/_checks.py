"""What a network checks before its kernels run: its state, whenever any of it was
replaced; each check that passes makes the ``fastnet.training.StepState`` the
steps run on (whose ``check_updates`` checks every step's update before any
is applied).

``StateChecks`` is a part of ``NeuralNetwork`` (a mixin: it works on the
network's own attributes); its methods are described there, under "Notes".
"""

from fastnet._changes import COUNT
from fastnet._validation import positive_int
from fastnet.activations import Identity
from fastnet.layers import DenseLayer
from fastnet.optimizers import Optimizer
from fastnet.training.state import StepState


class StateChecks:
    """The checks of ``NeuralNetwork``: the state its training steps are made
    from (``_checked``), and the ``StepState`` made from it (``step_state``)."""

    @property
    def step_state(self):
        """The ``fastnet.training.StepState`` of this network's steps (update
        bounds, execution plans, workspaces), made by the last check of its
        state that passed (``check``; every training call and ``forward``/
        ``backward`` check first when anything changed), or by a check now
        when there is none.  Kept for ``fastnet.training``; not to be changed
        by hand."""
        steps = self._steps
        if steps is None:
            self._checked()
            steps = self._steps
        return steps

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
        previous, self._steps = self._steps, None
        self._check_state()
        self._steps = StepState(self, previous)  # bounds and plans for the state as it is now
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
        if opt.state is not None:  # made by the first step that is applied (training's made_state)
            opt.prepare(self.parameters())


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

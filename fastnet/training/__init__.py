"""How a network trains: which path a step takes, the steps, and the epoch loops.

* ``plan(network, batch, comm=None, keep_grads=False) -> (path, reason)``:
  the one place that decides between the fused step and the layered path
  (``paths``), and ``execution_plan``, what a step on a batch size runs on.
* ``StepState`` (``state``): what the steps carry from one to the next (the
  update bounds, the execution plans, workspaces), made by every check of a
  network's state that passes (``network.step_state``); ``made_state``
  makes the optimizer's state at the first update.
* ``train_batch``, ``forward_backward``, ``gradients_into``: a training step,
  the forward and backward passes alone, and a step's gradients alone into a
  flat buffer (the fused step's first half where it runs), on validated data
  (``steps``); ``compiling_ahead``, the block a ``train_step`` runs in, which
  starts compiling the fused step before the step's checks compile.
* ``apply_gradients``: the checked update from gradients given whole.
* ``batches``, ``epoch_sgd``, ``epoch_gd``, ``gd_accumulate``,
  ``batch_accuracy``: the epochs of ``fit`` (``loop``); ``fastnet.distributed``
  builds its data-parallel epochs from the same pieces.
* ``fit_epochs``: ``fit``'s loop over the epochs, with the history, the
  progress bar, the callbacks and the validation (``fit``).

``NeuralNetwork`` validates the arguments and the state (``_checks``) before
any of these runs: they take validated arrays and checked state.  They use
the network's public API, its ``StepState``, and a few names of its own
and its layers' kept for them: the unchecked passes (``_forward``,
``_backward``), the layers' buffers for the fused step (``_buffers``,
``_show_pass``) and the optimizers' unchecked update (``_step``).
"""

from fastnet.training.fit import fit_epochs
from fastnet.training.loop import batch_accuracy, batches, epoch_gd, epoch_sgd, gd_accumulate
from fastnet.training.paths import PATHS, execution_plan, plan
from fastnet.training.state import StepState, made_state
from fastnet.training.steps import (
           apply_gradients,
           compiling_ahead,
           forward_backward,
           forward_loss,
           gradients_into,
           train_batch,
)

__all__ = ["PATHS", "StepState", "apply_gradients", "batch_accuracy", "batches", "compiling_ahead",
           "epoch_gd", "epoch_sgd", "execution_plan", "fit_epochs", "forward_backward", "forward_loss",
           "gd_accumulate", "gradients_into", "made_state", "plan", "train_batch"]

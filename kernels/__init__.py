"""Pure array kernels of fastnet, installed as ``fastnet.kernels``.

The folder is ``kernels/`` in the repository and ``fastnet.kernels`` once
installed (see ``pyproject.toml``); it is never imported as a top-level
``kernels`` module, because PyPI has an unrelated project of that name.

The kernels know nothing of fastnet's objects.  Activations and losses reach
them as small integer codes, looked up by name in the tables below, because
objects cannot enter compiled code.  Two packages mirror each other, module by
module (``activations``, ``dense``, ``losses``, ``optimizers``, ``fused``,
``epoch``):

* ``fastnet.kernels.numpy``, the reference: complete and obviously correct;
* ``fastnet.kernels.numba``, the same public names (its ``__all__``) with the
  same parameters, compiled; plus what only compiled code needs (``cpu``,
  ``tiles``, ``tuning``).  Importing it imports numba.
"""

#: Activation names, in code order: ``ACTIVATIONS.index(name)`` is the code
#: the kernels take as ``kind``.
ACTIVATIONS = (
    "identity",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "elu",
    "softplus",
    "gelu",
)

#: Loss names, in code order, likewise.
LOSSES = ("mse", "softmax_xent", "bce_logits")

#: How ``fit``'s epochs count a batch's correct predictions, in code order (a
#: loss's ``accuracy_code``): not at all (regression); the argmax of the
#: outputs against the targets' (softmax); the sign of each logit against
#: targets >= 0.5, averaged over the outputs (binary).
ACCURACIES = ("none", "argmax", "threshold")

ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}
LOSS_CODES = {name: code for code, name in enumerate(LOSSES)}

IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, ELU, SOFTPLUS, GELU = range(len(ACTIVATIONS))
MSE, SOFTMAX_XENT, BCE_LOGITS = range(len(LOSSES))

"""Pure array kernels of fastnet, installed as ``fastnet.kernels``.

The folder is ``kernels/`` in the repository and ``fastnet.kernels`` once
installed (see ``pyproject.toml``); it is never imported as a top-level
``kernels`` module, because PyPI has an unrelated project of that name.

The kernels know nothing of fastnet's objects.  Activations and losses reach
them as small integer codes, looked up by name in the tables below, because
objects cannot enter compiled code.  ``_numpy`` is the reference: complete and
obviously correct.  A compiled module, when there is one, exposes exactly the
same names with exactly the same parameters.
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

ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}
LOSS_CODES = {name: code for code, name in enumerate(LOSSES)}

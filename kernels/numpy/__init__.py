"""The reference kernels: plain NumPy, complete and obviously correct.

Every compiled kernel of fastnet is checked against these functions; the
compiled package ``fastnet.kernels.numba`` has the same modules, and the same
public names (``__all__``) with the same parameters.  The contract they all
follow:

* positional arguments only; arrays are C-contiguous and share one float dtype
  (float32 or float64) per call; scalars are Python numbers;
* results are written into arrays passed in (``out`` buffers owned by the
  caller) and those arrays are returned;
* no validation: the caller (``fastnet``) has checked shapes, dtypes and
  values before the call;
* activations and losses are selected by the integer ``kind`` codes of
  ``fastnet.kernels.ACTIVATIONS`` and ``fastnet.kernels.LOSSES``.

Shapes: ``B`` is the batch size, ``n_in`` the number of inputs of a layer,
``n_out`` its number of neurons, ``C`` the number of outputs of a network.
"""

from .activations import activation_derivative, activation_forward, activation_grad
from .apply import fused_adam_apply, fused_sgd_apply
from .dense import (
                    dense_backward,
                    dense_forward,
                    input_grad,
)
from .epoch import fused_adam_epoch, fused_sgd_epoch
from .fused import fused_adam_step, fused_gradients, fused_plan, fused_sgd_step
from .losses import check_and_one_hot, loss_and_grad, loss_grad, loss_value, softmax
from .optimizers import (
                    adam_step,
                    adam_update_bound,
                    flush_subnormal,
                    max_abs,
                    running_mean,
                    safe_limits,
                    sgd_step,
                    sgd_update_bound,
)

__all__ = [
    "activation_derivative",
    "activation_forward",
    "activation_grad",
    "adam_step",
    "adam_update_bound",
    "check_and_one_hot",
    "dense_backward",
    "dense_forward",
    "flush_subnormal",
    "fused_adam_apply",
    "fused_adam_epoch",
    "fused_adam_step",
    "fused_gradients",
    "fused_plan",
    "fused_sgd_apply",
    "fused_sgd_epoch",
    "fused_sgd_step",
    "input_grad",
    "loss_and_grad",
    "loss_grad",
    "loss_value",
    "max_abs",
    "running_mean",
    "safe_limits",
    "sgd_step",
    "sgd_update_bound",
    "softmax",
]

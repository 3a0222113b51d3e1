"""The compiled kernels: the names and parameters of ``fastnet.kernels.numpy``
(twin, module by module), compiled with numba.

This package is the only part of fastnet that imports numba; ``fastnet.backend``
imports it when the numba backend is first asked for.  Its public kernels are
``__all__``, the reference's; ``cpu`` (vector width, decorators, the cache,
calls by address), ``tiles`` (the register tile), ``blas`` (BLAS called from
compiled code), ``updates`` (the fused step's updates without ``dw``),
``tuning`` (every measured threshold), ``warm`` (what ``warmup`` compiles) and
``fused.step_aside`` (a helper process for the fused step's leaves) are what
only compiled code needs.

No kernel starts threads of its own (no ``prange``): the only thread pool is
BLAS's, so the two can never oversubscribe the cores.  Nothing is compiled at
import: each kernel compiles, or loads from numba's on-disk cache, at its first
call with a new signature (one per dtype: the callers cast or copy read-only and
other differently-typed arrays first).
"""

from . import blas, cpu, fused, tiles, tuning, updates  # noqa: F401 (the package's other modules, as attributes)
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

WIDE_VECTORS = cpu.WIDE_VECTORS

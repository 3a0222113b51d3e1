"""Every kernel signature the training paths compile, per dtype, and compiling a
share of them (no twin in ``fastnet.kernels.numpy``: nothing there compiles).

``fastnet.warmup`` splits the list between processes, one per core: numba
compiles one kernel at a time in a process (it holds a lock for the whole
compile), so on 2 cores a second process halves the wall time of compiling
everything.  Each process leaves what it compiled in numba's on-disk cache,
where the others load it from.

    python -m fastnet.kernels.numba.warm DTYPES PART PARTS

compiles (or loads) signatures PART, PART + PARTS, ... of DTYPES
(comma-separated float32, float64);

    python -m fastnet.kernels.numba.warm --leaves DTYPE

for ``aside.Aside``: sets up numba's compiler, then compiles the leaves
(``fused.LEAVES``) named on one line of stdin, in that order, until one is
compiled or cached already (``compile_until_met``).
"""

import sys

import numpy as np
from numba import types

from . import apply, aside, dense, epoch, fused, losses, optimizers


def _nb(dtype):
    return types.float32 if np.dtype(dtype) == np.float32 else types.float64


def _leaf_signatures(dtype):
    """(kernel, argument types) of each of ``fused.LEAVES``, as the step calls them."""
    return [(kernel, signature(_nb(dtype)).args) for kernels, signature in fused.LEAVES.entries
            for kernel in kernels]


def signatures(dtype):
    """(kernel, argument types) of every kernel the training paths call with
    arrays of ``dtype``: the fused step's kernels (``fused.LEAVES``, as it calls
    them) and the step's kernels (``fused.STEPS``), then the rest of the layered path's."""
    dt = _nb(dtype)
    m, f64, i64 = types.Array(dt, 2, "C"), types.float64, types.int64
    out = _leaf_signatures(dtype)
    out += [
        *((step, fused.step_signature(dt).args) for step in fused.STEPS),
        (epoch.compiled_epoch, epoch.epoch_args(dt)),
        (apply.compiled_apply, (types.Array(i64, 1, "C"), types.Array(i64, 2, "C"), types.Array(dt, 1, "C"),
                                types.boolean, f64, f64, f64, types.boolean, types.Array(f64, 2, "C"),
                                types.Array(f64, 2, "C"), f64, f64, f64, f64, i64, types.Array(f64, 1, "C"))),
        (losses.check_and_one_hot, (m, types.Array(i64, 1, "C"), m)),
        (dense.weight_grad_small, (m, m, m)),
        (optimizers.sgd_step, (m, m, m, f64, f64, f64, types.boolean)),
        (optimizers.adam_step, (m, m, m, m, f64, f64, f64, f64, f64, i64)),
        (optimizers.running_mean, (m, m, f64)),
        (optimizers.max_abs, (m,)),
    ]
    # float64 scalars whatever the arrays' dtype (a second compile of them is a no-op)
    out += [(optimizers.sgd_update_bound, (f64,) * 7 + (types.boolean, f64, f64)),
            (optimizers.adam_update_bound, (f64,) * 10 + (i64, f64, f64))]
    out += [(kernel, (m, m)) for kernel in losses.LOSS_VALUE]
    return out


def compile_share(dtypes, part, parts):
    """Compile (or load from the cache) signatures part, part + parts, ... of the
    ``signatures`` of ``dtypes``, one list after the other."""
    work = [entry for dtype in dtypes for entry in signatures(dtype)]
    for kernel, args in work[part::parts]:
        kernel.compile(args)


def compile_until_met(dtype, names):
    """Compile (or load) the leaves of ``fused.LEAVES`` named ``names``, for
    ``dtype``, in this order, and stop at the first that this process has or
    the cache holds: the process that shared them (``aside.Aside.share``)
    takes them from the other end, and has reached this one."""
    leaves = {kernel.__name__: (kernel, args) for kernel, args in _leaf_signatures(dtype)}
    for name in names:
        kernel, args = leaves[name]
        if aside.have(kernel, args):
            return
        kernel.compile(args)


def set_up_compiler():
    """numba's own set-up, done at a process's first compile (about 0.5 s on
    Zen 4): a helper does it while the process it helps checks its batch."""
    from numba import njit

    njit(lambda a: a + 1)(1)


def main(argv):
    if argv[:1] == ["--leaves"]:
        set_up_compiler()
        compile_until_met(argv[1], sys.stdin.readline().split())  # one line; none if the pipe is closed
        return
    dtypes, part, parts = argv
    compile_share(dtypes.split(","), int(part), int(parts))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Threads and JIT warm-up: one place that owns the process's compute resources.

``set_num_threads(n)`` is the one thread setting of fastnet.  It limits the
BLAS pool (through threadpoolctl) and numba's pool together.  fastnet's
compiled kernels start no threads of their own, so with this setting the
process never runs more compute threads than ``n``, at any batch size.
"""

import subprocess
import sys
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits


def set_num_threads(n):
    """Use at most ``n`` compute threads (BLAS and numba) from now on."""
    from fastnet._validation import positive_int

    n = positive_int(n, "n")
    threadpool_limits(limits=n)
    if "numba" in sys.modules:  # never import numba just to set its threads
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def get_num_threads():
    """The BLAS thread count in force (the largest of the loaded BLAS pools)."""
    pools = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(pools) if pools else 1


def warmup(dtype=None, *, backend="numba", processes=None):
    """Compile the JIT kernels ahead of time; returns the seconds it took.

    ``dtype``: None for the layers' default, float32; ``"float32"`` or
    ``"float64"`` (or the NumPy types); ``"all"`` for both.  Nothing is compiled
    for a dtype that is not asked for.  Every kernel signature the training
    paths use is compiled (``fastnet.kernels.numba.warm``), split between
    ``processes`` processes (default: one per core this process may use, at
    most 4): numba compiles one kernel at a time in a process, and each process
    leaves its kernels in numba's on-disk cache for the others.  Then tiny
    networks of every activation, loss and optimizer run through every
    training path (``NeuralNetwork.plan``: fused at small batches with and
    without momentum and weight decay, layered, full-batch gradient descent),
    prediction and evaluation, loading those kernels into this process, so
    that a network of any depth and size then trains and predicts without
    compiling again.  The time is about the compile time when the on-disk
    cache is cold, far less when it is warm; 0.0 when the backend is not
    available (or is ``"numpy"``: nothing to compile).
    """
    import fastnet as fn
    from fastnet._validation import positive_int
    from fastnet.backend import available_backends
    from fastnet.kernels import ACTIVATIONS

    if isinstance(dtype, str) and dtype == "all":
        dtypes = (np.dtype(np.float32), np.dtype(np.float64))
    else:
        from fastnet.layers import float_dtype

        try:
            dtypes = (float_dtype(np.float32 if dtype is None else dtype),)
        except ValueError:
            raise ValueError(f"dtype must be None, 'float32', 'float64' or 'all', got {dtype!r}") from None
    if processes is not None:
        processes = positive_int(processes, "processes")
    if backend == "auto":
        backend = available_backends()[-1]
    if backend not in available_backends() or backend == "numpy":  # nothing to compile
        return 0.0
    from fastnet.kernels.numba.aside import usable_cores

    processes = min(usable_cores(), 4) if processes is None else processes
    start = time.perf_counter()
    _compile_in_processes([d.name for d in dtypes], processes)
    for dt in dtypes:
        for loss in (fn.SoftmaxCrossEntropy(), fn.MeanSquaredError(), fn.BinaryCrossEntropy()):
            for opt in (fn.SGD(0.0), fn.SGD(0.0, momentum=0.5), fn.SGD(0.0, weight_decay=0.5), fn.Adam(0.0)):
                layers = [fn.DenseLayer(name, 3, neurons_num=3, dtype=dt, rng=0) for name in ACTIVATIONS]
                layers.append(fn.DenseLayer("identity", neurons_num=2, dtype=dt, rng=0))
                net = fn.NeuralNetwork(layers, loss, opt, backend=backend)
                for batch in (1, 3, 9):  # each side of the JIT kernels' batch thresholds
                    x, t = np.ones((batch, 3), dt), np.zeros((batch, 2), dt)
                    t[:, 0] = 1  # a valid target for all three losses
                    net.train_step(x, t)
                    if loss.name == "softmax_xent":
                        net.train_step(x, np.zeros(batch, np.int64))  # class labels
                    net.fit(x, t, mode="gd", progress=False)
                net.predict(np.ones((2, 3), dt))
                net.evaluate(x, t)  # the loss alone, as validation_data computes it
    return time.perf_counter() - start


def _compile_in_processes(dtypes, processes):
    """Compile every kernel signature of ``dtypes``: a share in this process and,
    once it finds a kernel to compile (the on-disk cache is cold), one share in
    each of ``processes - 1`` new ones.  A helper that cannot start or fails
    leaves its share to the networks of ``warmup``, which compile what they do
    not find (a failure is reported as a RuntimeWarning)."""
    from fastnet.kernels.numba import aside, cpu, warm

    if cpu.DISABLED:  # NUMBA_DISABLE_JIT: nothing compiles
        return
    helpers = []

    def start_helpers(starting):
        if starting and not helpers:
            for part in range(1, processes):
                try:
                    helpers.append(aside.start_helper([",".join(dtypes), part, processes]))
                except OSError:  # e.g. no process may be started here: this one compiles it all
                    break

    stop_watching = cpu.on_compile(start_helpers)
    finished = False
    try:
        warm.compile_share(dtypes, 0, processes)
        finished = True
    finally:
        stop_watching()
        for helper in helpers:
            if not finished:  # interrupted or failed here: the helpers' work is not wanted
                helper.kill()
            try:
                _, err = helper.communicate(timeout=900)
            except subprocess.TimeoutExpired:
                helper.kill()
                _, err = helper.communicate()
            if finished and helper.returncode != 0:
                warnings.warn(f"a warmup helper process failed (exit {helper.returncode}); this process "
                              f"compiles its share: {err.decode(errors='replace')[-500:]}", RuntimeWarning,
                              stacklevel=3)

"""Threads and JIT warm-up: one place that owns the process's compute resources.

``set_num_threads(n)`` is the one thread setting of fastnet.  It limits the
BLAS pool (through threadpoolctl) and numba's pool together.  fastnet's
compiled kernels start no threads of their own, so with this setting the
process never runs more compute threads than ``n``, at any batch size.
"""

import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits


def set_num_threads(n):
    """Use at most ``n`` compute threads (BLAS and numba) from now on."""
    from fastnet._validation import positive_int

    n = positive_int(n, "n")
    threadpool_limits(limits=n)
    import sys

    if "numba" in sys.modules:  # never import numba just to set its threads
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def get_num_threads():
    """The BLAS thread count in force (the largest of the loaded BLAS pools)."""
    pools = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(pools) if pools else 1


def warmup(backend="numba"):
    """Compile the JIT kernels for float32 and float64 ahead of time.

    Runs a tiny network of every activation, loss and optimizer through the
    small- and large-batch paths.  Returns the seconds it took (about the
    compile time when the on-disk cache is cold, far less when it is warm),
    or 0.0 when the backend is not available.
    """
    import fastnet as fn
    from fastnet.backend import available_backends

    if backend == "auto":
        backend = available_backends()[-1]
    if backend not in available_backends() or backend == "numpy":  # nothing to compile
        return 0.0
    from fastnet.kernels import ACTIVATIONS

    start = time.perf_counter()
    k = fn.backend.kernels_for(backend)
    for dtype in (np.float32, np.float64):
        for loss, opt in ((fn.SoftmaxCrossEntropy(), fn.SGD(0.0)),
                          (fn.MeanSquaredError(), fn.SGD(0.0, momentum=0.5)),
                          (fn.BinaryCrossEntropy(), fn.Adam(0.0))):
            layers = [fn.DenseLayer(name, 3, neurons_num=3, dtype=dtype, rng=0) for name in ACTIVATIONS]
            layers.append(fn.DenseLayer("identity", neurons_num=2, dtype=dtype, rng=0))
            net = fn.NeuralNetwork(layers, loss, opt, backend=backend)
            for batch in (1, 3, 9):  # each side of the JIT kernels' batch thresholds
                t = np.zeros((batch, 2), dtype)
                t[:, 0] = 1  # a valid target for all three losses
                net.train_step(np.ones((batch, 3), dtype), t)
                net.fit(np.ones((batch, 3), dtype), t, mode="gd", progress=False)
        out = np.ones((2, 3), dtype)
        k.activation_derivative(0, 0.0, out, out.copy())
        k.activation_forward(0, 0.0, out, out.copy())
        k.activation_grad(0, 0.0, out, out, out, out.copy())
        k.softmax(out, out.copy())
    return time.perf_counter() - start

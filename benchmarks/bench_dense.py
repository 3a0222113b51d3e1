"""asv benchmarks of the dense layer and of an MLP, on every backend.

Numpy-style: all preparation in ``setup`` (which also runs each operation
once, so JIT compilation is never timed), one-line ``time_*`` methods, and
unavailable backends skipped by ``NotImplementedError`` in ``setup``.  Only
``time_*`` and ``peakmem_*`` benchmarks: asv times them with its own repeats
and keeps their spread.  Throughput (samples/s, and GFLOP/s where the
parameters give the layer sizes) is derived from those times by ``fastnet
history``, not timed again.

asv runs every parameter set in a process of its own (about 1.5 s each here),
so the parameters are chosen per class: the whole suite's ``asv run --quick``
stays within about three minutes on 2 cores.
"""

import numpy as np

import fastnet as fn

from .common import blob_classification, classification_inputs, dense_inputs, require_backend


def _threads(threads):
    """Set the compute threads of one parameter set: an int, or "all" (the cores this
    process may use)."""
    import os

    if threads == "all":
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    fn.set_num_threads(threads)


def _mlp(backend, dtype, optimizer, sizes=(784, 256, 256, 10)):
    acts = ["relu"] * (len(sizes) - 2) + ["identity"]
    layers = [fn.DenseLayer(acts[0], sizes[0], neurons_num=sizes[1], dtype=dtype, rng=0)]
    layers += [fn.DenseLayer(a, neurons_num=n, dtype=dtype, rng=i) for i, (a, n)
               in enumerate(zip(acts[1:], sizes[2:], strict=True), start=1)]
    opt = fn.Adam(1e-3) if optimizer == "adam" else fn.SGD(1e-3, momentum=0.9)
    return fn.NeuralNetwork(layers, "softmax_xent", opt, backend=backend)


class DenseLayer:
    """One width x width layer: forward, backward (with dx), and a train step of a
    one-layer network (mean squared error, SGD)."""

    params = (["numpy", "numba"], [1, 16, 256], [256, 512, 1024], ["relu"], ["float32"])
    param_names = ["backend", "batch", "width", "activation", "dtype"]
    timeout = 120

    def setup(self, backend, batch, width, activation, dtype):
        require_backend(backend)
        self.x, self.dy, self.target = dense_inputs(batch, width, dtype)
        self.layer = fn.DenseLayer(activation, width, neurons_num=width, dtype=dtype, rng=0,
                                   backend=backend)
        self.net = fn.NeuralNetwork([self.layer], "mse", fn.SGD(1e-4), backend=backend)
        self.net.train_step(self.x, self.target)
        self.layer.forward_pass(self.x)
        self.layer.backward_pass(self.dy)

    def time_forward(self, *params):
        self.layer.forward_pass(self.x)

    def time_backward(self, *params):
        self.layer.backward_pass(self.dy)

    def time_train_step(self, *params):
        self.net.train_step(self.x, self.target)


class DenseLayerThreads:
    """The layer's train step on one thread and on all of them."""

    params = (["numpy", "numba"], [16, 256], [512], [1, "all"])
    param_names = ["backend", "batch", "width", "threads"]
    timeout = 120

    def setup(self, backend, batch, width, threads):
        require_backend(backend)
        _threads(threads)
        self.x, _, self.target = dense_inputs(batch, width, np.float32)
        layer = fn.DenseLayer("relu", width, neurons_num=width, rng=0, backend=backend)
        self.net = fn.NeuralNetwork([layer], "mse", fn.SGD(1e-4), backend=backend)
        self.net.train_step(self.x, self.target)

    def time_train_step(self, *params):
        self.net.train_step(self.x, self.target)


class DenseLayerFloat64:
    """The layer's train step in float64."""

    params = (["numpy", "numba"], [16, 256], [512], ["float64"])
    param_names = ["backend", "batch", "width", "dtype"]
    timeout = 120

    def setup(self, backend, batch, width, dtype):
        require_backend(backend)
        self.x, _, self.target = dense_inputs(batch, width, dtype)
        layer = fn.DenseLayer("relu", width, neurons_num=width, dtype=dtype, rng=0, backend=backend)
        self.net = fn.NeuralNetwork([layer], "mse", fn.SGD(1e-4), backend=backend)
        self.net.train_step(self.x, self.target)

    def time_train_step(self, *params):
        self.net.train_step(self.x, self.target)


class MLP:
    """A 784-256-256-10 ReLU network, softmax cross-entropy, SGD with momentum or Adam.
    ``sizes`` is there for ``fastnet history``'s GFLOP/s."""

    params = (["numpy", "numba"], [1, 64, 1024], ["sgd_momentum", "adam"], ["784-256-256-10"])
    param_names = ["backend", "batch", "optimizer", "sizes"]
    timeout = 120

    def setup(self, backend, batch, optimizer, sizes):
        require_backend(backend)
        self.x, self.y = classification_inputs(batch, 784, 10, np.float32)
        self.net = _mlp(backend, np.float32, optimizer)
        self.net.train_step(self.x, self.y)

    def time_train_step(self, *params):
        self.net.train_step(self.x, self.y)


class MLPInference:
    """The MLP's predict, and the peak memory of its train step."""

    params = (["numpy", "numba"], [1, 1024])
    param_names = ["backend", "batch"]
    timeout = 120

    def setup(self, backend, batch):
        require_backend(backend)
        self.x, self.y = classification_inputs(batch, 784, 10, np.float32)
        self.net = _mlp(backend, np.float32, "sgd_momentum")
        self.net.train_step(self.x, self.y)
        self.net.predict(self.x)

    def time_predict(self, *params):
        self.net.predict(self.x)

    def peakmem_train_step(self, *params):
        self.net.train_step(self.x, self.y)


class MLPThreads:
    """The MLP's train step on one thread and on all of them."""

    params = (["numpy", "numba"], [64, 1024], [1, "all"], ["784-256-256-10"])
    param_names = ["backend", "batch", "threads", "sizes"]
    timeout = 120

    def setup(self, backend, batch, threads, sizes):
        require_backend(backend)
        _threads(threads)
        self.x, self.y = classification_inputs(batch, 784, 10, np.float32)
        self.net = _mlp(backend, np.float32, "sgd_momentum")
        self.net.train_step(self.x, self.y)

    def time_train_step(self, *params):
        self.net.train_step(self.x, self.y)


class Fit:
    """One epoch of ``fit`` on 10,000 x 100 samples of 10 classes (``blob_classification``),
    100-256-128-10, batches of 32, SGD with momentum: the loop users run."""

    params = (["numpy", "numba"],)
    param_names = ["backend"]
    timeout = 300
    number = 1
    repeat = (3, 5, 60.0)

    def setup(self, backend):
        require_backend(backend)
        self.X, self.y = blob_classification(10_000, 100, 10, np.float32)
        self.net = _mlp(backend, np.float32, "sgd_momentum", sizes=(100, 256, 128, 10))
        self.net.fit(self.X[:64], self.y[:64], epochs=1, batch_size=32, progress=False, rng=0)

    def time_fit_epoch(self, *params):
        self.net.fit(self.X, self.y, epochs=1, batch_size=32, progress=False, rng=0)


class Kernels:
    """The fused elementwise kernels alone, on the arrays of a 512-wide layer."""

    params = (["numpy", "numba"], [256, 2048], ["relu", "gelu"])
    param_names = ["backend", "batch", "activation"]

    def setup(self, backend, batch, activation):
        require_backend(backend)
        self.k = fn.backend.kernels_for(backend)
        x, dy, _ = dense_inputs(batch, 512, np.float32)
        self.a, self.dy = x, dy
        self.y, self.dz = np.empty_like(x), np.empty_like(x)
        self.kind = fn.kernels.ACTIVATIONS.index(activation)
        self.k.activation_forward(self.kind, 0.0, self.a, self.y)
        self.k.activation_grad(self.kind, 0.0, self.a, self.y, self.dy, self.dz)

    def time_activation_forward(self, *params):
        self.k.activation_forward(self.kind, 0.0, self.a, self.y)

    def time_activation_grad(self, *params):
        self.k.activation_grad(self.kind, 0.0, self.a, self.y, self.dy, self.dz)

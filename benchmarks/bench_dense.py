"""asv benchmarks of the dense layer and of an MLP, on every backend.

Numpy-style: all preparation in ``setup`` (which also runs each operation
once, so JIT compilation is never timed), one-line ``time_*`` methods, and
unavailable backends skipped by ``NotImplementedError`` in ``setup``.
"""

import numpy as np

import fastnet as fn

from .common import best_seconds, classification_inputs, dense_inputs, require_backend


class DenseLayer:
    """One width x width layer: forward, backward (with dx), and a train step of a
    one-layer network (mean squared error, SGD)."""

    params = (["numpy", "numba"], [1, 16, 256, 2048], [512], ["relu", "tanh"], ["float32"])
    param_names = ["backend", "batch", "width", "activation", "dtype"]
    timeout = 120

    def setup(self, backend, batch, width, activation, dtype):
        require_backend(backend)
        self.x, self.dy, self.target = dense_inputs(batch, width, dtype)
        self.layer = fn.DenseLayer(activation, width, neurons_num=width, dtype=dtype, rng=0,
                                   backend=backend)
        self.net = fn.NeuralNetwork([self.layer], "mse", fn.SGD(1e-4), backend=backend)
        self.flops_per_step = 4.0 * batch * width * width  # x @ w and x.T @ dz
        self.net.train_step(self.x, self.target)
        self.layer.forward_pass(self.x)
        self.layer.backward_pass(self.dy)

    def time_forward(self, *params):
        self.layer.forward_pass(self.x)

    def time_backward(self, *params):
        self.layer.backward_pass(self.dy)

    def time_train_step(self, *params):
        self.net.train_step(self.x, self.target)

    def track_train_step_samples_per_s(self, *params):
        return self.x.shape[0] / best_seconds(lambda: self.net.train_step(self.x, self.target))

    track_train_step_samples_per_s.unit = "samples/s"

    def track_train_step_gflops(self, *params):
        return self.flops_per_step / best_seconds(lambda: self.net.train_step(self.x, self.target)) / 1e9

    track_train_step_gflops.unit = "GFLOP/s"

    def peakmem_train_step(self, *params):
        self.net.train_step(self.x, self.target)


class MLP:
    """A 784-256-256-10 ReLU network, softmax cross-entropy, SGD with momentum."""

    params = (["numpy", "numba"], [1, 64, 1024], ["float32"])
    param_names = ["backend", "batch", "dtype"]
    timeout = 120

    def setup(self, backend, batch, dtype):
        require_backend(backend)
        self.x, self.y = classification_inputs(batch, 784, 10, dtype)
        layers = [fn.DenseLayer("relu", 784, neurons_num=256, dtype=dtype, rng=0),
                  fn.DenseLayer("relu", neurons_num=256, dtype=dtype, rng=1),
                  fn.DenseLayer("identity", neurons_num=10, dtype=dtype, rng=2)]
        self.net = fn.NeuralNetwork(layers, "softmax_xent", fn.SGD(1e-3, momentum=0.9),
                                    backend=backend)
        self.net.train_step(self.x, self.y)

    def time_train_step(self, *params):
        self.net.train_step(self.x, self.y)

    def time_predict(self, *params):
        self.net.predict(self.x)

    def track_train_step_samples_per_s(self, *params):
        return self.x.shape[0] / best_seconds(lambda: self.net.train_step(self.x, self.y))

    track_train_step_samples_per_s.unit = "samples/s"

    def peakmem_train_step(self, *params):
        self.net.train_step(self.x, self.y)


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

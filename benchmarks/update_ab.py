"""The update after the Allreduce: one compiled call against the per-parameter kernels.

    python benchmarks/update_ab.py [--repeats 9]

Distributed training applies each step's reduced gradients with
``training.apply_gradients``.  Given the flat reduction buffer, where the
fused step runs, that is one compiled call (``fused_sgd_apply``,
``fused_adam_apply``); without it, the per-parameter path: the gradients'
bounds, each layer's check and each parameter's optimizer kernel, called from
Python.  Both are timed here on twin networks (float32, numba), alternating,
medians after warm-up (``fastnet.timing.compare``), beside the step's
gradients alone at B = 32 (``fused_gradients``) for scale.  Both compute the
same parameters bit for bit (``tests/test_apply.py``).
"""

import argparse

import numpy as np

import fastnet as fn
from fastnet import training
from fastnet.info import environment
from fastnet.timing import compare

SIZES = ((100, 256, 128, 5), (784, 256, 256, 10))
OPTIMIZERS = {"momentum": lambda: fn.SGD(1e-4, momentum=0.9), "adam": lambda: fn.Adam(1e-4)}
BATCH = 32


def _net(sizes, optimizer):
    rng = np.random.default_rng(0)
    acts = ["relu"] * (len(sizes) - 2) + ["identity"]
    layers = [fn.DenseLayer(acts[0], sizes[0], neurons_num=sizes[1], rng=rng)]
    layers += [fn.DenseLayer(a, neurons_num=n, rng=rng) for a, n in zip(acts[1:], sizes[2:], strict=True)]
    return fn.NeuralNetwork(layers, "softmax_xent", optimizer, backend="numba")


def case(sizes, optimizer):
    """{name: callable} for one network and optimizer."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(BATCH, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], BATCH)
    nets = [_net(sizes, OPTIMIZERS[optimizer]()) for _ in range(2)]
    for net in nets:
        net.train_step(x, y)  # the optimizer's state and the fused plan
    params = nets[0].parameters()
    flat = (1e-3 * rng.normal(size=sum(p.size for p in params))).astype(np.float32)
    views, at = [], 0
    for p in params:
        views.append(flat[at:at + p.size].reshape(p.shape))
        at += p.size
    copies = [v.copy() for v in views]
    t = np.eye(sizes[-1], dtype=np.float32)[y]  # the one-hot targets, as train_step's check builds them
    buf = np.empty_like(flat)
    return {
        "compiled": lambda: training.apply_gradients(nets[0], views, "here", flat, BATCH),
        "per-parameter": lambda: training.apply_gradients(nets[1], copies, "here"),
        "gradients": lambda: training.gradients_into(nets[0], x, t, "here", 1.0, buf),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    env = environment()
    print(f"{env['cpu']}, {env['cores']} cores; numpy {env['numpy']}, numba {env['numba']}")
    print(f"{'network':>18} {'optimizer':>9} {'compiled us':>12} {'per-param us':>13} {'ratio':>6} "
          f"{'gradients B=32 us':>18}")
    for sizes in SIZES:
        for optimizer in OPTIMIZERS:
            res = compare(case(sizes, optimizer), repeats=args.repeats, target_seconds=0.02)
            med = {k: v["median"] * 1e6 for k, v in res.items()}
            print(f"{'-'.join(map(str, sizes)):>18} {optimizer:>9} {med['compiled']:12.1f} "
                  f"{med['per-parameter']:13.1f} {med['per-parameter'] / med['compiled']:6.2f} "
                  f"{med['gradients']:18.1f}", flush=True)


if __name__ == "__main__":
    main()

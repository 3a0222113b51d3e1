"""What the reliability checks cost: train_step with and without them, and predict with and without the lock.

    python benchmarks/check_costs.py [--baseline REV] [--no-patch] [--only "B=256"]

* ``train_step``: the 784-256-256-10 ReLU MLP, float32, numba, SGD with
  momentum at B = 1, 16 and 256, plain SGD at B = 256 (all fused) and Adam at
  B = 256 (layered), this checkout against the baseline, one call of each in
  turn.  The baseline is REV (default HEAD) with ``no_checks.patch`` applied
  (``baseline.patched``): the same code without the state's re-check before
  each step and without the update bounds (the scans of each layer's input and
  gradient, and the test on them), so the ratio is what the checks cost.
  ``--no-patch`` compares with REV as it is.  ``base/new`` is the ratio of the
  medians (below 1: the checkout is slower), with the ratio of each half of
  the run to show its spread.  The patch is against the files as they are
  now; ``git apply`` says so when they have moved on.
* ``predict`` at B = 1 and 1000, with the network's lock and without it (the
  method's unwrapped function), in turn.

Timing: medians after warm-up, one process, one timing job at a time.
"""

import argparse
import os
import time

import numpy as np

import fastnet as fn
from fastnet.info import environment

_pc = time.perf_counter


def _net(mod, optimizer):
    rng = np.random.default_rng(0)
    layers = [mod.DenseLayer("relu", 784, neurons_num=256, rng=rng),
              mod.DenseLayer("relu", neurons_num=256, rng=rng),
              mod.DenseLayer("identity", neurons_num=10, rng=rng)]
    return mod.NeuralNetwork(layers, "softmax_xent", optimizer, backend="numba")


def _alternate(fa, fb, n):
    for _ in range(max(5, n // 10)):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(n):
        t0 = _pc()
        fa()
        t1 = _pc()
        fb()
        ta.append(t1 - t0)
        tb.append(_pc() - t1)
    return np.array(ta), np.array(tb)


def train_steps(base, only):
    rng = np.random.default_rng(1)
    optimizers = {"momentum": lambda m: m.SGD(1e-4, momentum=0.9), "plain": lambda m: m.SGD(1e-4),
                  "adam": lambda m: m.Adam(1e-5)}
    for batch, name in ((1, "momentum"), (16, "momentum"), (256, "momentum"), (256, "plain"), (256, "adam")):
        label = f"train_step {name} B={batch}"
        if only and only not in label:
            continue
        x, y = rng.normal(size=(batch, 784)).astype(np.float32), rng.integers(0, 10, batch)
        a, b = _net(base, optimizers[name](base)), _net(fn, optimizers[name](fn))
        n = 4000 if batch == 1 else 1000 if batch == 16 else 300
        ta, tb = _alternate(lambda a=a, x=x, y=y: a.train_step(x, y),
                            lambda b=b, x=x, y=y: b.train_step(x, y), n)
        h = n // 2
        halves = [np.median(ta[s]) / np.median(tb[s]) for s in (slice(0, h), slice(h, None))]
        print(f"{label:28s} {b.plan(batch):12s} base/new {np.median(ta) / np.median(tb):.3f} "
              f"(halves {halves[0]:.3f}, {halves[1]:.3f}); base {np.median(ta) * 1e6:.1f} us, "
              f"new {np.median(tb) * 1e6:.1f} us", flush=True)


def lock_cost(only):
    net = _net(fn, fn.SGD(0.01))
    unlocked = fn.NeuralNetwork.predict.__wrapped__
    rng = np.random.default_rng(2)
    for batch, n in ((1, 5000), (1000, 400)):
        label = f"predict B={batch}"
        if only and only not in label:
            continue
        x = rng.normal(size=(batch, 784)).astype(np.float32)
        ta, tb = _alternate(lambda x=x: net.predict(x), lambda x=x: unlocked(net, x), n)
        print(f"{label:28s} with the lock {np.median(ta) * 1e6:.1f} us, "
              f"without {np.median(tb) * 1e6:.1f} us: {np.median(ta) / np.median(tb) - 1:+.2%}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD", help="the commit to compare train_step with")
    parser.add_argument("--no-patch", action="store_true", help="the baseline without no_checks.patch")
    parser.add_argument("--only", default="", help="only the cases whose label holds this text")
    args = parser.parse_args()

    print(environment(), flush=True)
    from baseline import load_baseline  # here: asv imports every module of benchmarks/, from elsewhere

    patch = None if args.no_patch else os.path.join(os.path.dirname(os.path.abspath(__file__)), "no_checks.patch")
    base = load_baseline(args.baseline, patch)
    print(f"baseline: {base.baseline_rev}", flush=True)
    train_steps(base, args.only)
    lock_cost(args.only)


if __name__ == "__main__":
    main()

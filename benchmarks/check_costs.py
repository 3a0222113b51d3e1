"""What the reliability checks cost: train_step with and without them, and predict with and without the lock.

    python benchmarks/check_costs.py [--baseline REV] [--no-patch] [--only "B=256"]

* ``train_step``: the 784-256-256-10 ReLU MLP, float32, numba, SGD with
  momentum at B = 1, 16 and 256, plain SGD and Adam at B = 256 (all on the
  fused path), this checkout against the baseline, one call of each in
  turn.  The baseline is REV (default HEAD) with ``no_checks.patch`` applied
  (``baseline.patched``): the same code without the state's re-check before
  each step and without the update bounds (the scans of each layer's input and
  gradient, and the test on them), so the ratio is what the checks cost.
  ``--no-patch`` compares with REV as it is.  ``base/new`` is the ratio of the
  medians (below 1: the checkout is slower), the median over pairs of
  networks made afresh (``PAIRS``), with their range.  The patch is against the files as they are
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


def alternate(fa, fb, n):
    """Medians of n calls of each, alternating, the first of each pair swapped
    every round (an order effect cancels)."""
    for _ in range(max(5, n // 10)):
        fa()
        fb()
    ta, tb = [], []
    for r in range(n):
        first, second, t_first, t_second = (fa, fb, ta, tb) if r % 2 else (fb, fa, tb, ta)
        t0 = _pc()
        first()
        t1 = _pc()
        second()
        t_first.append(t1 - t0)
        t_second.append(_pc() - t1)
    return np.median(ta), np.median(tb)


#: Pairs of networks made afresh per case: where their arrays land in memory
#: (cache sets, pages) moves a step's time by 1-2% at B = 1 and 16 (measured:
#: the same code as baseline and checkout, 0.977 and 0.987 in one pair), so
#: the ratio is the median over pairs, with their range.
PAIRS = 7


def train_steps(base, only):
    rng = np.random.default_rng(1)
    optimizers = {"momentum": lambda m: m.SGD(1e-4, momentum=0.9), "plain": lambda m: m.SGD(1e-4),
                  "adam": lambda m: m.Adam(1e-5)}
    for batch, name in ((1, "momentum"), (16, "momentum"), (256, "momentum"), (256, "plain"), (256, "adam")):
        label = f"train_step {name} B={batch}"
        if only and only not in label:
            continue
        x, y = rng.normal(size=(batch, 784)).astype(np.float32), rng.integers(0, 10, batch)
        n = 1000 if batch == 1 else 300 if batch == 16 else 80
        ratios, times = [], []
        for _ in range(PAIRS):
            a, b = _net(base, optimizers[name](base)), _net(fn, optimizers[name](fn))
            ma, mb = alternate(lambda a=a, x=x, y=y: a.train_step(x, y),
                                lambda b=b, x=x, y=y: b.train_step(x, y), n)
            ratios.append(ma / mb)
            times.append((ma, mb))
        ma, mb = np.median(times, axis=0)
        print(f"{label:28s} {b.plan(batch):8s} base/new {np.median(ratios):.3f} (pairs {min(ratios):.3f}-"
              f"{max(ratios):.3f}); base {ma * 1e6:.1f} us, new {mb * 1e6:.1f} us", flush=True)


def lock_cost(only):
    net = _net(fn, fn.SGD(0.01))
    unlocked = fn.NeuralNetwork.predict.__wrapped__
    rng = np.random.default_rng(2)
    for batch, n in ((1, 5000), (1000, 400)):
        label = f"predict B={batch}"
        if only and only not in label:
            continue
        x = rng.normal(size=(batch, 784)).astype(np.float32)
        ta, tb = alternate(lambda x=x: net.predict(x), lambda x=x: unlocked(net, x), n)
        print(f"{label:28s} with the lock {ta * 1e6:.1f} us, without {tb * 1e6:.1f} us: "
              f"{ta / tb - 1:+.2%}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD", help="the commit to compare train_step with")
    parser.add_argument("--no-patch", action="store_true", help="the baseline without no_checks.patch")
    parser.add_argument("--only", default="", help="only the cases whose label holds this text")
    args = parser.parse_args()

    print(environment(), flush=True)
    from baseline import load_baseline  # here: asv imports every module of benchmarks/, from elsewhere

    here = os.path.dirname(os.path.abspath(__file__))
    patch = None if args.no_patch else os.path.join(here, "no_checks.patch")
    base = load_baseline(args.baseline, patch)
    print(f"baseline: {base.baseline_rev}", flush=True)
    train_steps(base, args.only)
    lock_cost(args.only)


if __name__ == "__main__":
    main()

"""Small-batch train_step against another commit, over pairs of networks made afresh.

    python benchmarks/small_batch_ab.py --baseline REV [--batches 1,2,4,8,16] [--pairs 7]

For the 512-384-128-20 and 784-256-256-10 ReLU MLPs (float32, numba, plain SGD
and SGD with momentum 0.9), this checkout's ``train_step`` against REV's (a
commit loaded beside it by ``baseline.py``), one call of each in turn.  Where a
network's arrays land in memory moves a step of a few rows by 1-3% (the same
code on both sides: ``check_costs.py --no-patch``), so each ratio is the median
over ``--pairs`` pairs made afresh, with their range.  ``base/new`` below 1: the
checkout is slower.  Medians after warm-up, one process, one timing job at a time.
"""

import argparse

import numpy as np

import fastnet as fn
from fastnet.info import environment

SIZES = ((512, 384, 128, 20), (784, 256, 256, 10))
OPTIMIZERS = {"sgd": lambda m: m.SGD(1e-4), "momentum": lambda m: m.SGD(1e-4, momentum=0.9)}


def _net(mod, optimizer, sizes):
    rng = np.random.default_rng(0)
    acts = ["relu"] * (len(sizes) - 2) + ["identity"]
    layers = [mod.DenseLayer(acts[0], sizes[0], neurons_num=sizes[1], rng=rng)]
    layers += [mod.DenseLayer(a, neurons_num=n, rng=rng) for a, n in zip(acts[1:], sizes[2:], strict=True)]
    return mod.NeuralNetwork(layers, "softmax_xent", optimizer, backend="numba")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--batches", default="1,2,4,8,16")
    parser.add_argument("--pairs", type=int, default=7)
    args = parser.parse_args()
    print(environment(), flush=True)
    from baseline import load_baseline  # here: asv imports every module of benchmarks/
    from check_costs import alternate

    base = load_baseline(args.baseline)
    print(f"baseline: {base.baseline_rev}", flush=True)
    rng = np.random.default_rng(1)
    for sizes in SIZES:
        for name, make in OPTIMIZERS.items():
            for batch in (int(b) for b in args.batches.split(",")):
                x = rng.normal(size=(batch, sizes[0])).astype(np.float32)
                y = rng.integers(0, sizes[-1], batch)
                ratios = []
                for _ in range(args.pairs):
                    a, b = _net(base, make(base), sizes), _net(fn, make(fn), sizes)
                    ma, mb = alternate(lambda a=a, x=x, y=y: a.train_step(x, y),
                                       lambda b=b, x=x, y=y: b.train_step(x, y), 400)
                    ratios.append(ma / mb)
                label = f"{'-'.join(map(str, sizes))} {name} B={batch}"
                print(f"{label:32s} base/new {np.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})",
                      flush=True)


if __name__ == "__main__":
    main()

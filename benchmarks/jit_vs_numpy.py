"""JIT path against the NumPy reference and against bare BLAS, side by side.

    python benchmarks/jit_vs_numpy.py [--quick] [--cases 512,1024,mlp,mlp-wide] [--batches 8,16]
                                      [--optimizer sgd|momentum|adam|sgd-decay|momentum-decay] [--repeats 9]
                                      [--out results.json] [--baseline REV]

For each shape and batch size, in one process, alternating, medians after
warm-up (``fastnet.timing.compare``):

* ``numpy``, ``numba``: one forward and one backward pass of a dense layer
  (with dx), or one ``train_step`` of the MLP, on that backend;
* ``blas``: the same-shaped matrix products alone, into preallocated buffers
  (x @ w, x.T @ dz, dz @ w.T per layer; the MLP's first layer has no dz @ w.T).

Printed ratios: ``roofline = blas / numba`` (1.0 is the GEMM limit at large
batch) and ``speedup = numpy / numba``; with ``--baseline REV``, ``base/new``:
the numba path as of that commit (``baseline.py``), timed in the same rounds,
over this tree's.
"""

import argparse
import functools
import json

import numpy as np

import fastnet as fn
from fastnet.info import environment
from fastnet.timing import compare

BATCHES = [2**k for k in range(13)]  # 1 ... 4096


def layer_case(n_in, n_out, batch, backend, rng, lib=fn):
    layer = lib.DenseLayer("relu", n_in, neurons_num=n_out, rng=0, backend=backend)
    x = rng.normal(size=(batch, n_in)).astype(np.float32)
    dy = rng.normal(size=(batch, n_out)).astype(np.float32)

    def step():
        layer.forward_pass(x)
        layer.backward_pass(dy)

    return step


def blas_case(sizes, batch, rng, first_dx=True):
    """The bare matrix products of fwd+bwd through layers of ``sizes``."""
    mats = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        x = rng.normal(size=(batch, n_in)).astype(np.float32)
        w = rng.normal(size=(n_in, n_out)).astype(np.float32)
        a = np.empty((batch, n_out), np.float32)
        dz = rng.normal(size=(batch, n_out)).astype(np.float32)
        dw = np.empty_like(w)
        dx = np.empty_like(x) if (i > 0 or first_dx) else None
        mats.append((x, w, a, dz, dw, dx))

    def step():
        for x, w, a, dz, dw, dx in mats:
            np.matmul(x, w, out=a)
            np.matmul(x.T, dz, out=dw)
            if dx is not None:
                np.matmul(dz, w.T, out=dx)

    return step


OPTIMIZERS = {"sgd": lambda lib: lib.SGD(1e-4), "momentum": lambda lib: lib.SGD(1e-4, momentum=0.9),
              "adam": lambda lib: lib.Adam(1e-4), "sgd-decay": lambda lib: lib.SGD(1e-4, weight_decay=1e-4),
              "momentum-decay": lambda lib: lib.SGD(1e-4, momentum=0.9, weight_decay=1e-4)}


def mlp(sizes, backend, lib=fn, optimizer="sgd"):
    """The MLP of ``sizes`` these benchmarks train: ReLU layers, an identity last
    layer, softmax cross-entropy, ``OPTIMIZERS[optimizer]``, built with ``lib``
    (fastnet, or a baseline commit's: see ``baseline.py``)."""
    layers = [lib.DenseLayer("relu", sizes[0], neurons_num=sizes[1], rng=0)]
    layers += [lib.DenseLayer("relu", neurons_num=n, rng=i) for i, n in enumerate(sizes[2:-1])]
    layers.append(lib.DenseLayer("identity", neurons_num=sizes[-1], rng=9))
    return lib.NeuralNetwork(layers, lib.SoftmaxCrossEntropy(), OPTIMIZERS[optimizer](lib), backend=backend)


def mlp_case(sizes, batch, backend, rng, lib=fn, optimizer="sgd"):
    net = mlp(sizes, backend, lib, optimizer)
    x = rng.normal(size=(batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=batch)
    return lambda: net.train_step(x, y)


CASES = {"512": ("dense 512x512 relu", [512, 512]), "1024": ("dense 1024x1024 relu", [1024, 1024]),
         "mlp": ("mlp 784-256-256-10", [784, 256, 256, 10]),
         "mlp-wide": ("mlp 512-384-128-20", [512, 384, 128, 20])}


def run(quick=False, cases=tuple(CASES), batches=None, repeats=None, base=None, optimizer="sgd"):
    rng = np.random.default_rng(0)
    batches = batches or ([1, 4, 16, 64, 256, 1024] if quick else BATCHES)
    repeats = repeats or (5 if quick else 9)
    cases = [CASES[c] for c in cases]
    rows = []
    for title, sizes in cases:
        if len(sizes) > 2:
            title += f", {optimizer}"
        print(f"\n{title}\n{'B':>5} {'numpy us':>10} {'numba us':>10} {'blas us':>10} "
              f"{'speedup':>8} {'roofline':>8}" + (f" {'base us':>10} {'base/new':>8}" if base else ""))
        for batch in batches:
            make = layer_case if len(sizes) == 2 else functools.partial(mlp_case, optimizer=optimizer)
            args = (*sizes,) if len(sizes) == 2 else (sizes,)
            cands = {b: make(*args, batch, b, rng) for b in ("numpy", "numba")}
            cands["blas"] = blas_case(sizes, batch, rng, first_dx=len(sizes) == 2)
            if base is not None:  # the baseline's numba path, alternating with this tree's
                cands["base"] = make(*args, batch, "numba", rng, lib=base)
            res = compare(cands, repeats=repeats, target_seconds=0.01 if quick else 0.02)
            med = {k: v["median"] for k, v in res.items()}
            row = {"case": title, "batch": batch, **{f"{k}_s": v for k, v in med.items()},
                   "speedup": med["numpy"] / med["numba"], "roofline": med["blas"] / med["numba"]}
            line = (f"{batch:5d} {med['numpy'] * 1e6:10.1f} {med['numba'] * 1e6:10.1f} "
                    f"{med['blas'] * 1e6:10.1f} {row['speedup']:8.2f} {row['roofline']:8.2f}")
            if base is not None:
                row["base_over_new"] = med["base"] / med["numba"]
                line += f" {med['base'] * 1e6:10.1f} {row['base_over_new']:8.3f}"
            rows.append(row)
            print(line)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS), default="sgd", help="the MLPs' optimizer")
    parser.add_argument("--out", default=None)
    parser.add_argument("--baseline", metavar="REV", default=None,
                        help="also time the numba path as of this commit, side by side (baseline.py)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")] if args.batches else None
    fn.warmup()
    base = None
    if args.baseline:
        from baseline import load_baseline

        base = load_baseline(args.baseline)
        base.warmup()
        print(f"baseline: {base.baseline_rev}")
    env = environment()
    print(f"{env['cpu']}, {env['cores']} cores; numpy {env['numpy']}, numba {env['numba']}")
    for pool in env["threadpools"]:
        print(f"{pool['user_api']}: {pool['internal_api']} {pool['version']}, "
              f"{pool['num_threads']} threads")
    rows = run(args.quick, args.cases.split(","), batches, args.repeats, base, args.optimizer)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env": env, "rows": rows}, f, indent=1, default=str)


if __name__ == "__main__":
    main()

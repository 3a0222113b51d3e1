"""``fit`` beside a plain PyTorch training loop and scikit-learn's MLPClassifier.

    python benchmarks/fit_vs_peers.py [--batches 32,128,256] [--epochs 5] [--repeats 3] [--rounds 3]
                                      [--optimizer momentum|adam] [--baseline REV] [--quick]

The same work in each library: ``epochs`` epochs over 16,000 x 100 samples
(``make_classification``, 5 classes, float32 for fastnet and PyTorch; float64
in scikit-learn, which has no other), a 100-256-128-5 ReLU MLP with a softmax
cross-entropy loss, minibatches of B reshuffled every epoch, SGD with
momentum 0.9 at lr 0.01 (no Nesterov, no weight decay; ``--optimizer adam``:
Adam at 1e-3).  PyTorch's loop is the one its tutorials write: ``randperm``,
index, ``zero_grad``, ``backward``, ``step``, with ``torch.set_num_threads``
at the machine's cores; scikit-learn's ``MLPClassifier(solver="sgd")`` runs
every epoch (``n_iter_no_change = max_iter``).  ``--baseline REV`` adds
fastnet as of that commit (``baseline.py``).

Each library runs in a block of its own (their thread pools spin and slow each
other), after untimed warm-up fits of every library and one more at the start
of each block.  The blocks take turns, ``--rounds`` times over: on these shared
machines a neighbour's load comes and goes over tens of seconds (measured: the
same fastnet fit took 0.24-0.27 s in some processes and 0.53-0.57 s in others
minutes apart), and one block each would give it all to whichever library ran
then.  The figure is the median of the ``rounds x repeats`` fits, and the table
gives the others' times over fastnet's, and the range of the per-round ratios.
"""

import argparse
import os
import statistics
import time
import warnings

import numpy as np

import fastnet as fn
from fastnet.info import environment

SIZES = (100, 256, 128, 5)


def data(n=16_000):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n, n_features=SIZES[0], n_informative=30, n_classes=SIZES[-1],
                               random_state=0)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X.astype(np.float32), y.astype(np.int64)


def fastnet_fit(mod, X, y, batch, epochs, optimizer, seed):
    rng = np.random.default_rng(seed)
    layers = [mod.DenseLayer("relu", SIZES[0], neurons_num=SIZES[1], rng=rng),
              mod.DenseLayer("relu", neurons_num=SIZES[2], rng=rng),
              mod.DenseLayer("identity", neurons_num=SIZES[3], rng=rng)]
    opt = mod.SGD(0.01, momentum=0.9) if optimizer == "momentum" else mod.Adam(1e-3)
    net = mod.NeuralNetwork(layers, "softmax_xent", opt, backend="numba")
    start = time.perf_counter()
    net.fit(X, y, epochs=epochs, batch_size=batch, progress=False, rng=seed)
    return time.perf_counter() - start


def torch_fit(X, y, batch, epochs, optimizer, seed):
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.ReLU(),
                                torch.nn.Linear(SIZES[1], SIZES[2]), torch.nn.ReLU(),
                                torch.nn.Linear(SIZES[2], SIZES[3]))
    opt = (torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if optimizer == "momentum"
           else torch.optim.Adam(model.parameters(), lr=1e-3))
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    n = Xt.shape[0]
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n)
        for s in range(0, n, batch):
            idx = order[s:s + batch]
            opt.zero_grad()
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def sklearn_fit(X, y, batch, epochs, optimizer, seed):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    est = MLPClassifier(hidden_layer_sizes=SIZES[1:-1], batch_size=batch, max_iter=epochs,
                        n_iter_no_change=epochs, alpha=0.0, random_state=seed, shuffle=True,
                        **(dict(solver="sgd", learning_rate_init=0.01, momentum=0.9, nesterovs_momentum=False)
                           if optimizer == "momentum" else dict(solver="adam", learning_rate_init=1e-3)))
    X64 = X.astype(np.float64)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X64, y)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="32,128,256")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per block")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the blocks")
    parser.add_argument("--optimizer", choices=("momentum", "adam"), default="momentum")
    parser.add_argument("--baseline", help="also fastnet as of this commit (baseline.py)")
    parser.add_argument("--quick", action="store_true", help="one repeat of one epoch: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.epochs, args.rounds = 1, 1, 1
    batches = [int(b) for b in args.batches.split(",")]
    print(environment(), flush=True)
    X, y = data()
    libraries = {"fastnet": lambda b, s: fastnet_fit(fn, X, y, b, args.epochs, args.optimizer, s)}
    if args.baseline:
        from baseline import load_baseline  # here: asv imports every module of benchmarks/

        base = load_baseline(args.baseline)
        libraries[f"fastnet {args.baseline}"] = lambda b, s: fastnet_fit(base, X, y, b, args.epochs,
                                                                          args.optimizer, s)
    try:
        import torch

        torch.set_num_threads(os.cpu_count())
        libraries[f"torch {torch.__version__}"] = lambda b, s: torch_fit(X, y, b, args.epochs,
                                                                         args.optimizer, s)
    except ImportError:
        print("PyTorch is not installed: pip install torch==2.13.0 (a CPU build)")
    import sklearn

    libraries[f"sklearn {sklearn.__version__}"] = lambda b, s: sklearn_fit(X, y, b, args.epochs,
                                                                           args.optimizer, s)
    for fit in libraries.values():  # warm-up, all first: compiles fastnet's kernels, fills every cache
        for batch in batches:
            fit(batch, 99)
    samples = {(name, b): [] for name in libraries for b in batches}
    for _ in range(args.rounds):
        for name, fit in libraries.items():  # a block per library
            time.sleep(1.0)  # the last block's BLAS threads go to sleep
            for batch in batches:
                fit(batch, 98)  # and this block's first fit, untimed (the first block ran slower without it)
                samples[name, batch].append([fit(batch, s) for s in range(args.repeats)])
    times = {key: statistics.median(t for block in blocks for t in block) for key, blocks in samples.items()}

    def ratios(name, b):  # per round: the medians of its blocks
        return [statistics.median(x) / statistics.median(y)
                for x, y in zip(samples[name, b], samples["fastnet", b], strict=True)]
    print(f"\nfit: {args.epochs} epochs of {X.shape[0]} x {X.shape[1]}, {'-'.join(map(str, SIZES))} ReLU, "
          f"{args.optimizer}; seconds (median of {args.rounds} rounds x {args.repeats}), time / fastnet's, "
          "and that ratio's range over the rounds")
    print(f"{'library':24s}" + "".join(f"{f'B={b}':>30s}" for b in batches))
    for name in libraries:
        cells = []
        for b in batches:
            r = ratios(name, b)
            cells.append(f"{times[name, b]:8.3f} s {times[name, b] / times['fastnet', b]:6.2f}x "
                         f"({min(r):.2f}-{max(r):.2f})")
        print(f"{name:24s}" + "".join(f"{c:>30s}" for c in cells), flush=True)


if __name__ == "__main__":
    main()

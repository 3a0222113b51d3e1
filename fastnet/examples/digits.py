"""Train a small network on the handwritten digits that ship with scikit-learn.

Run it with ``python -m fastnet.examples.digits`` (or ``fastnet demo``).  It
needs scikit-learn (``pip install "fastnet-dense[examples]"``); the data set is
inside the package, nothing is downloaded.

``mpiexec -n 2 python -m fastnet.examples.digits --distributed`` trains the
same network data-parallel on two processes (``pip install
"fastnet-dense[mpi]"``): each rank takes every size-th sample of the training
and test sets, ``--batch-size`` stays the global batch (split over the ranks),
and rank 0 prints the global metrics.
"""

import argparse
import sys
import time
import traceback

import numpy as np

import fastnet as fn


def load_split(test_fraction=0.25, seed=0, dtype=np.float32):
    """The digits data scaled to [0, 1], split into (train, test) with a seeded shuffle."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise SystemExit(
            "the digits example needs scikit-learn: pip install 'fastnet-dense[examples]'"
        ) from None
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return (X[train], y[train]), (X[test], y[test])


def build_network(hidden=128, seed=0, dtype=np.float32, backend=None, optimizer=None):
    """64 -> hidden (ReLU) -> hidden (ReLU) -> 10 logits, softmax cross-entropy."""
    rng = np.random.default_rng(seed)
    layers = [
        fn.DenseLayer("relu", 64, fn.WeightInit.he_init_gauss, hidden, dtype=dtype, rng=rng),
        fn.DenseLayer("relu", None, fn.WeightInit.he_init_gauss, hidden, dtype=dtype, rng=rng),
        fn.DenseLayer("identity", None, fn.WeightInit.xavier_init_gauss, 10, dtype=dtype, rng=rng),
    ]
    if optimizer is None:
        optimizer = fn.SGD(0.05, momentum=0.9)
    return fn.NeuralNetwork(layers, fn.SoftmaxCrossEntropy(), optimizer, backend=backend)


def positive_int(text):
    """An argparse type: a usage error, not a traceback, for 0 or a negative number."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastnet demo", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=positive_int, default=30, help="passes over the training set")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="samples per SGD step")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, weights and shuffling")
    parser.add_argument("--backend", default=None, choices=fn.backend.BACKENDS,
                        help="None: fastnet's default backend")
    parser.add_argument("--no-progress", action="store_true", help="show no progress bar")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over the processes of mpiexec (needs fastnet-dense[mpi])")
    args = parser.parse_args(argv)

    comm, rank, size = None, 0, 1
    if args.distributed:
        from fastnet.distributed import mpi, threads_per_rank

        comm = mpi().COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
        fn.set_num_threads(threads_per_rank(comm))  # the ranks of one machine share its cores
    (X_train, y_train), (X_test, y_test) = load_split(seed=args.seed)
    n_train = len(y_train)
    # this rank's shard (every size-th sample); the global batch is split over the ranks
    X_train, y_train = X_train[rank::size], y_train[rank::size]
    X_test, y_test = X_test[rank::size], y_test[rank::size]
    batch_size = max(1, args.batch_size // size)
    net = build_network(seed=args.seed, backend=args.backend)
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"{net}\ntrain {n_train} samples on {size} rank{'s' if size > 1 else ''}, "
        f"batch {batch_size * size}, test {len(y_test) if comm is None else comm.allreduce(len(y_test))}")
    start = time.perf_counter()
    history = net.fit(X_train, y_train, epochs=args.epochs, batch_size=batch_size,
                      validation_data=(X_test, y_test), progress=not args.no_progress,
                      rng=args.seed + rank, comm=comm)
    seconds = time.perf_counter() - start
    for epoch in sorted({0, len(history["loss"]) // 2, len(history["loss"]) - 1}):
        say(f"epoch {epoch + 1:3d}: loss {history['loss'][epoch]:.4f}  "
            f"train acc {history['accuracy'][epoch]:.4f}  "
            f"test acc {history['val_accuracy'][epoch]:.4f}")
    accuracy = net.evaluate(X_test, y_test, comm=comm)["accuracy"]
    say(f"test accuracy {accuracy:.4f}; fit took {seconds:.2f} s on the {net.backend} backend")
    return 0


def run(argv=None):
    """``main``; under ``--distributed``, an uncaught exception on one rank
    aborts every rank (MPI_Abort) instead of leaving the others waiting in a
    collective (what ``python -m mpi4py`` does for a script)."""
    args = sys.argv[1:] if argv is None else argv
    if "--distributed" not in args:
        return main(argv)
    try:
        return main(argv)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        from fastnet.distributed import mpi

        mpi().COMM_WORLD.Abort(1)


if __name__ == "__main__":
    raise SystemExit(run())

"""Cases that tests/test_distributed.py runs under ``mpiexec -n 2``.

Usage: mpiexec -n 2 python tests/mpi_cases.py CASE OUTDIR [options as key=value]

Every rank writes OUTDIR/rank<r>.json (what it raised, its history) and
OUTDIR/rank<r>.npz (its parameters before and after); the test compares them
with a single-process run that it computes itself.  The data and the
networks come from ``make_data`` and ``make_net``, which the test imports too.
"""

import json
import sys
import traceback
from pathlib import Path

import numpy as np

import fastnet as fn
import fastnet.callbacks  # noqa: F401  (fn.callbacks)

SIZES = (12, 16, 16, 5)
SHUFFLE_SEED = 100  # rank r shuffles its shard with default_rng(SHUFFLE_SEED + r)


def make_optimizer(name):
    if name == "sgd10":  # a learning rate whose update of a gradient near 3e37 overflows float32
        return fn.SGD(10.0)
    return fn.Adam(1e-2) if name == "adam" else fn.SGD(0.1, momentum=0.9)


def make_net(dtype, backend, seed=0, sizes=SIZES, optimizer=None, loss="softmax_cross_entropy"):
    rng = np.random.default_rng(seed)
    acts = ["tanh"] * (len(sizes) - 2) + ["identity"]
    layers = [fn.DenseLayer(acts[0], sizes[0], neurons_num=sizes[1], dtype=dtype, rng=rng)]
    layers += [fn.DenseLayer(a, None, neurons_num=n, dtype=dtype, rng=rng)
               for a, n in zip(acts[1:], sizes[2:], strict=True)]
    if optimizer is None:
        optimizer = fn.SGD(0.1, momentum=0.9)
    return fn.NeuralNetwork(layers, loss, optimizer, backend=backend)


def make_data(n, dtype, seed, sizes=SIZES):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n)
    return X, y


def shards(n0, n1, dtype):
    """Two ranks' data: (X0, y0), (X1, y1)."""
    return make_data(n0, dtype, seed=10), make_data(n1, dtype, seed=11)


def _params(net):
    return {f"p{i}": p.copy() for i, p in enumerate(net.parameters())}


class _RankCallback(fn.callbacks.Callback):
    """Asks to stop (or raises, or puts first-layer weights of a wrong shape in
    place) at epoch 2 on one rank only."""

    def __init__(self, acts, does, net=None):
        self.acts, self.does, self.net = acts, does, net

    def on_epoch_end(self, epoch, logs):
        if self.acts and epoch == 2:
            if self.does == "raise":
                raise RuntimeError("callback failed on rank 1")
            if self.does == "bad_state":
                w = self.replaced = self.net.layers[0].w
                self.net.layers[0].w = np.zeros((w.shape[0] + 1, w.shape[1]), w.dtype)
                return False
            return True
        return False


def new_layer(dtype):
    """The layer the "callback_new_layer" case puts in place of layers[1] after epoch 1."""
    return fn.DenseLayer("tanh", SIZES[1], neurons_num=SIZES[2], dtype=dtype, rng=7)


class _EveryRankCallback(fn.callbacks.Callback):
    """After epoch 1: on every rank, a new layers[1] (``new_layer``), or wider
    layers[1:] and a new optimizer; or, on rank 0
    only, changes that are no part of the network (they count as changes all the
    same: ``fastnet._changes``)."""

    def __init__(self, net, case, rank):
        self.net, self.case, self.rank = net, case, rank

    def on_epoch_end(self, epoch, logs):
        if epoch == 1 and self.case == "callback_new_layer":
            self.net.layers[1] = new_layer(self.net.dtype)
        if epoch == 1 and self.case == "callback_widen":  # 16 -> 20 -> 5: checked, but not the buffer's
            dtype = self.net.dtype
            self.net.layers[1:] = [fn.DenseLayer("tanh", SIZES[1], neurons_num=20, dtype=dtype, rng=7),
                                   fn.DenseLayer("identity", 20, neurons_num=SIZES[3], dtype=dtype, rng=8)]
            self.net.optimizer = fn.SGD(0.1, momentum=0.9)
        if epoch == 1 and self.case == "callback_count" and self.rank == 0:
            for lr in (0.1, 0.2, 0.3):
                fn.SGD(lr)
        return False


def main(case, outdir, **opts):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    dtype = np.dtype(opts.get("dtype", "float32"))
    backend = opts.get("backend", "numpy")
    report = {"rank": rank, "error": None, "error_type": None}
    arrays = {}
    n0, n1 = int(opts.get("n0", 40)), int(opts.get("n1", 40))
    (X0, y0), (X1, y1) = shards(n0, n1, dtype)
    X, y = (X0, y0) if rank == 0 else (X1, y1)
    sizes = SIZES
    if case == "mismatch_sizes" and rank == 1:
        sizes = (12, 16, 17, 5)
    if case == "mismatch_dtype" and rank == 1:
        dtype = np.dtype(np.float64 if dtype == np.float32 else np.float32)
        X = X.astype(dtype)
    loss = "softmax_cross_entropy"
    if case == "diverge":  # regression on the one-hot labels
        loss = "mse"
        y = np.eye(sizes[-1], dtype=dtype)[y]
    # rank 1 starts from other weights: the broadcast from rank 0 must overwrite them
    net = make_net(dtype, backend, seed=rank, sizes=sizes, loss=loss,
                   optimizer=make_optimizer(opts.get("optimizer", "sgd")))
    if case == "overflow":  # first-layer weights from input 0 tiny; rank 1's third batch huge there
        net.layers[0].w[0] = 1e-38
        X = X.copy()
        X[:, 0] = 0
        if rank == 1:
            batch = int(opts.get("batch", 4))
            X[2 * batch:3 * batch, 0] = 3e38
    fused_calls = {"fused_gradients": 0, "fused_sgd_apply": 0, "fused_adam_apply": 0}
    if backend == "numba":  # count the steps whose gradients and updates take the compiled calls
        kernels = net.kernels

        def counted(name, real):
            def call(*args):
                fused_calls[name] += 1
                return real(*args)
            return call

        for name in fused_calls:
            setattr(kernels, name, counted(name, getattr(kernels, name)))
    if opts.get("warm_both"):  # each rank trained alone before, on its own data: states and plans of its own
        net.fit(X[::-1].copy() if rank else X, y[::-1].copy() if rank else y, batch_size=int(opts["batch"]),
                progress=False, rng=5 + rank)
    if opts.get("warm1") and rank == 1:  # rank 1 also has optimizer state of its own: overwritten too
        net.fit(X, y, batch_size=3, progress=False, rng=5)
    arrays.update({f"before_{k}": v for k, v in _params(net).items()})
    if case == "bad_shard" and rank == 1:
        X = X.copy()
        X[3, 2] = np.nan
    if case == "diverge" and rank == 1:  # the squared error of its 3rd batch overflows float32
        y[2 * int(opts.get("batch", 4)) + 1] = 1e30
    if case == "exception" and rank == 1:
        from fastnet import training

        calls = {"n": 0}
        real = training.gradients_into

        def failing(*args):  # the training step's gradients, as distributed training asks for them
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("injected failure on rank 1")
            return real(*args)

        training.gradients_into = failing
    try:
        if case == "evaluate":
            report["scores"] = net.evaluate(X, y, comm=comm)
        elif case == "save":
            report["path"] = net.save(Path(outdir) / "model", comm=comm)
        elif case == "save_fails":
            report["path"] = net.save(Path(outdir) / "missing-folder" / "model", comm=comm)
        else:
            rng = "not a seed" if case == "bad_rng" and rank == 1 else SHUFFLE_SEED + rank
            callbacks = None
            if case in ("callback_stop", "callback_raise", "callback_bad_state"):  # rank 1's, at epoch 2
                callbacks = [_RankCallback(rank == 1, case[len("callback_"):], net)]
            if case in ("callback_new_layer", "callback_count", "callback_widen"):
                callbacks = [_EveryRankCallback(net, case, rank)]
            history = net.fit(X, y, epochs=int(opts.get("epochs", 1)), batch_size=int(opts.get("batch", 4)),
                              mode=opts.get("mode", "sgd"), shuffle=bool(int(opts.get("shuffle", 0))),
                              progress=False, comm=comm, rng=rng,
                              validation_data=(X, y) if opts.get("val") else None, callbacks=callbacks)
            report["history"] = history
    except Exception as exc:
        report["error"], report["error_type"] = str(exc), type(exc).__name__
        report["traceback"] = traceback.format_exc()
    if case == "callback_bad_state" and rank == 1:  # put back what rank 1 trained, for the comparison
        net.layers[0].w = callbacks[0].replaced
    arrays.update(_params(net))
    for key in ("bounds", "m_bounds"):  # the update checks' (a network that never trained has none)
        # (a check that failed, as rank 1's of callback_bad_state, leaves none: not compared then)
        steps = None if case == "callback_bad_state" else net._steps
        arrays[key] = getattr(steps, key, np.zeros(0)).copy()
    if case == "fit" and report["error"] is None:
        arrays.update({f"grad{i}": g.copy() for i, g in enumerate(net.gradients())})
    np.savez(Path(outdir) / f"rank{rank}.npz", **arrays)
    report["fused_gradient_calls"] = fused_calls["fused_gradients"]
    report["fused_apply_calls"] = fused_calls["fused_sgd_apply"] + fused_calls["fused_adam_apply"]
    Path(outdir, f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], **dict(a.split("=", 1) for a in sys.argv[3:]))

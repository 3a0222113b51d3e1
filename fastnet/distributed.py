"""Data-parallel training over MPI processes, through mpi4py.

``NeuralNetwork.fit(X, y, ..., comm=comm)`` trains one replica of the network
per process of the communicator; ``X`` and ``y`` are that process's shard of
the data.  The design already averages gradients over a minibatch; here the
mean runs over the minibatches of all processes, computed by one
``Allreduce`` per step:

* at the start, every rank checks that the replicas agree (layer sizes,
  activations, dtype, loss, optimizer, backend and the arguments of ``fit``)
  and that its own data is valid, and all ranks learn every rank's verdict
  (``allgather``): a mismatch or a bad shard raises on every rank at once
  instead of leaving the others waiting in a collective;
* the parameters and the optimizer state are broadcast from rank 0, so every
  replica starts identical;
* ``batch_size`` is per rank.  Every rank takes the same number of steps per
  epoch (that of the largest shard; a rank whose shard has run out contributes
  an empty batch).  Each rank scales its batch-mean gradients by
  ``m_rank / M`` (its batch size over the step's global batch size, both known
  to every rank in advance), so the sum is the mean over the global batch,
  short last batches and uneven shards counted right.  The scale is applied to
  the loss gradient, and the backward pass writes ``dw`` and ``db`` straight
  into the one buffer that is reduced, so a step copies no gradient; after
  the step the layers' ``dw`` and ``db`` hold the global mean gradients.  The
  same buffer carries the loss, the number of correct predictions and a
  failure flag;
* every rank applies the same update to the same reduced gradient, so the
  replicas stay identical (MPI's sum of the same numbers is the same on every
  rank for the reductions MPICH and Open MPI use; with two ranks a + b = b + a
  exactly);
* ``mode="gd"`` reduces the epoch's running means once per epoch;
* an exception or a non-finite loss on one rank is carried by the flag: every
  rank skips that step's update and raises, the failing rank its own
  exception, the others a ``DistributedError`` naming it (a
  ``FloatingPointError`` when the loss diverged).  No rank is left waiting.

A step is split at the Allreduce: the fused step updates the weights without
materialising the gradients, and the gradients are what the ranks must add.
Where the fused step runs, its compiled first half (``fused_gradients``)
writes each rank's gradients, scaled by its share of the global batch,
straight into the reduction buffer (the first step, which makes the
optimizer's state, and the other configurations take the layered passes);
then the reduction; then the update, checked as one process checks it, the
same on every rank, in one compiled call where the fused step runs
(``fused_sgd_apply``, ``fused_adam_apply``; ``mode="gd"``'s one update an
epoch takes the optimizer's kernels from Python).  mpi4py is imported only
when a communicator is given.
"""

import os
import time

import numpy as np

from fastnet import training

_INSTALL_HINT = 'install it with: pip install "fastnet-dense[mpi]" (mpi4py and the MPICH runtime)'


class DistributedError(RuntimeError):
    """Raised on the other ranks when one rank of a distributed call failed."""


def mpi():
    """The ``mpi4py.MPI`` module; an ImportError that says how to install it otherwise."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"distributed training needs mpi4py, which failed to import ({exc}); "
                          f"{_INSTALL_HINT}") from None
    return MPI


def check_comm(comm):
    """``comm`` when it is an mpi4py intracommunicator; a TypeError otherwise."""
    MPI = mpi()
    if not isinstance(comm, MPI.Intracomm):
        raise TypeError(f"comm must be an mpi4py intracommunicator such as MPI.COMM_WORLD, got {comm!r}")
    return comm


def threads_per_rank(comm):
    """The cores of this machine divided among the ranks that share it (at
    least 1): pass it to ``fastnet.set_num_threads`` so that the ranks on one
    machine do not oversubscribe its cores."""
    MPI = mpi()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return max(1, (os.cpu_count() or 1) // local.Get_size())
    finally:
        local.Free()


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"


def _raise_failures(comm, error, what):
    """Called by every rank once all know that some rank failed: the failing
    ranks raise their own exception, the others one that names them."""
    reports = comm.allgather(None if error is None else _describe(error))
    if error is not None:
        raise error
    failed = [(rank, text) for rank, text in enumerate(reports) if text is not None]
    text = "; ".join(f"rank {rank}: {msg}" for rank, msg in failed)
    diverged = all(msg.startswith("FloatingPointError") for _, msg in failed)
    kind = FloatingPointError if diverged else DistributedError
    raise kind(f"{what} stopped because another rank failed ({text})")


def agree(comm, compute, what):
    """Run ``compute()`` on every rank and return its result, or raise on every
    rank when it raised on any (one ``allgather``, so no rank is left waiting)."""
    error = result = None
    try:
        result = compute()
    except Exception as exc:
        error = exc
    if comm.allreduce(error is not None):
        _raise_failures(comm, error, what)
    return result


def _signature(net, fit_args):
    """What must be equal on every rank for the replicas to stay identical."""
    return {
        "layer sizes": tuple([net.n_inputs] + [la.neurons_num for la in net.layers]),
        "activations": tuple((la.activation.name if hasattr(la.activation, "name")
                              else type(la.activation).__name__, getattr(la.activation, "alpha", None))
                             for la in net.layers),
        "dtype": net.dtype.name,
        "loss": net.loss.name,
        "optimizer": (type(net.optimizer).__name__, tuple(sorted(net.optimizer.config().items()))),
        "backend": net.backend,
        "fit arguments": fit_args,
    }


def check_replicas(comm, net, fit_args):
    """Raise the same ValueError on every rank when the replicas differ."""
    sigs = comm.allgather(agree(comm, lambda: _signature(net, fit_args), "fit"))
    for rank, sig in enumerate(sigs[1:], start=1):
        for key, value in sig.items():
            if value != sigs[0][key]:
                raise ValueError(f"the replicas differ: rank 0 has {key} {sigs[0][key]}, "
                                 f"rank {rank} has {value}; every rank must build the same network "
                                 "and call fit with the same arguments")


def broadcast_state(comm, net):
    """Parameters (in place) and optimizer state from rank 0 to every rank."""
    for p in net.parameters():
        comm.Bcast(p, root=0)
    opt = net.optimizer
    state = comm.bcast(opt.state, root=0)
    if comm.Get_rank() != 0:
        opt.set_state(state, net.parameters())


class DataParallel:
    """The per-fit state of data-parallel training (see the module docstring)."""

    def __init__(self, net, comm, n_local, batch_size, mode):
        self.net, self.comm = net, comm
        self.MPI = mpi()
        self.sizes = comm.allgather(n_local)
        self.n_total = sum(self.sizes)
        self.batch_size = batch_size
        # mode "sgd": every rank takes the steps of the largest shard, and knows
        # the global batch of every step
        self.steps = max(-(-n // batch_size) for n in self.sizes)
        self.step_sizes = [sum(min(batch_size, max(0, n - s * batch_size)) for n in self.sizes)
                           for s in range(self.steps)]
        params = net.parameters()
        n_params = sum(p.size for p in params)
        # gradients, then loss * m, correct predictions and the failure flag: one Allreduce
        self.buf = np.empty(n_params + 3, dtype=net.dtype)
        self.grads, offset = [], 0
        for p in params:
            self.grads.append(self.buf[offset:offset + p.size].reshape(p.shape))
            offset += p.size
        self.mode = mode
        self.rebind()
        self.allreduce_seconds = 0.0

    def rebind(self):
        """Have the layers' backward passes write dw and db straight into the
        reduction buffer (mode "sgd": no copy per step), again at each
        epoch's start: a callback may have put new layers in place.  Their
        parameters must keep the shapes and dtype the buffer was made for
        (``ValueError`` otherwise, nothing changed)."""
        shapes = [(g.shape, g.dtype) for g in self.grads]
        now = [(p.shape, p.dtype) for p in self.net.parameters()]
        if now != shapes:
            raise ValueError(f"under a communicator the parameters keep their shapes and dtype for the "
                             f"whole fit: {[s for s, _ in shapes]} in {self.buf.dtype} at its start, now "
                             f"{[s for s, _ in now]} in {now[0][1]}")
        if self.mode == "sgd":
            for layer, dw, db in zip(self.net.layers, self.grads[0::2], self.grads[1::2], strict=True):
                layer.gradients_into(dw, db)

    @property
    def starts(self):
        return range(0, self.steps * self.batch_size, self.batch_size)

    def _reduce(self, error, what):
        """Sum the buffer over the ranks; raise on every rank if one failed."""
        self.buf[-1] = error is not None
        start = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, self.buf, op=self.MPI.SUM)
        self.allreduce_seconds += time.perf_counter() - start
        if self.buf[-1] != 0:
            _raise_failures(self.comm, error, f"training {what}")

    def epoch_sgd(self, X, T, order, starts, batch_size, epoch, bar):
        net = self.net
        total_loss = total_correct = 0.0
        for step, xb, tb in training.batches(X, T, order, starts, batch_size):
            m, where = xb.shape[0], f"at epoch {epoch}, step {step}"
            error = None
            self.buf[-3:-1] = 0
            try:
                if m:
                    # scaled by this rank's share of the global batch, into the buffer
                    loss = training.gradients_into(net, xb, tb, where, m / self.step_sizes[step - 1],
                                                   self.buf[:-3])
                    self.buf[-3] = loss * m
                    self.buf[-2] = training.batch_accuracy(net, tb)
                else:  # this rank's shard has run out: an empty contribution
                    self.buf[:-3] = 0
            except Exception as exc:
                error = exc
            self._reduce(error, where)
            # checked as one process checks it; every rank has the same gradients and parameters,
            # so every rank decides the same: the replicas stay identical without a message
            training.apply_gradients(net, self.grads, where, self.buf[:-3], m or self.batch_size)
            total_loss += float(self.buf[-3])
            total_correct += float(self.buf[-2])
            bar.update()
        return total_loss / self.n_total, total_correct / self.n_total

    def epoch_gd(self, X, T, order, starts, batch_size, epoch, bar):
        net = self.net
        error = None
        self.buf[-3:-1] = 0
        try:
            acc, loss_sum, correct = training.gd_accumulate(net, X, T, order, starts, batch_size, epoch, bar)
            self.buf[-3], self.buf[-2] = loss_sum, correct
            for view, a in zip(self.grads, acc, strict=True):
                np.multiply(a, X.shape[0] / self.n_total, out=view)
        except Exception as exc:
            error = exc
        self._reduce(error, f"at epoch {epoch}")
        training.apply_gradients(net, self.grads, f"at epoch {epoch}")
        return float(self.buf[-3]) / self.n_total, float(self.buf[-2]) / self.n_total


def global_scores(comm, compute, what):
    """``compute()`` gives this rank's (scores dict, number of samples); the
    result is the sample-weighted mean of every score over the ranks."""
    scores, n = agree(comm, compute, what)
    keys = sorted(scores)
    sums = np.array([scores[k] * n for k in keys] + [n], dtype=np.float64)
    comm.Allreduce(mpi().IN_PLACE, sums)
    return {k: float(s / sums[-1]) for k, s in zip(keys, sums[:-1], strict=True)}


def on_root(comm, compute, what):
    """Run ``compute()`` on rank 0 only and return its result on every rank;
    its exception is raised on every rank (rank 0's own, a DistributedError
    on the others)."""
    error = result = None
    if comm.Get_rank() == 0:
        try:
            result = compute()
        except Exception as exc:
            error = exc
    report, result = comm.bcast((None if error is None else _describe(error), result), root=0)
    if error is not None:
        raise error
    if report is not None:
        raise DistributedError(f"{what} failed on rank 0: {report}")
    return result

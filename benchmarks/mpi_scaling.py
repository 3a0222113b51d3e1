"""Data-parallel scaling over MPI: 2 ranks against 1, SGD on a 784-256-256-10 MLP.

    mpiexec -n 2 python -m benchmarks.mpi_scaling [--batches 256,4096] [--rounds 7] [--out DIR]

Needs ``pip install -e ".[jit,mpi]"``.  One BLAS/JIT thread per rank.  For
each global batch G, in one run, configurations alternate round by round and
each round times ``fit`` over a fixed number of steps, 3 epochs so that
fit's once-per-call work (checking the data, agreeing the replicas) weighs
little (medians over rounds):

* ``1 process``: rank 0 alone, plain ``fit`` (no communicator), batch G;
* ``1 rank``: rank 0 alone on a communicator of size 1, batch G (what MPI
  costs with nobody to talk to);
* ``2 ranks, strong``: the same global batch G, G/2 per rank;
* ``2 ranks, weak``: G per rank, twice the data per step;
* ``1 process, 2 threads``: the other way to use the machine's 2 cores,
  BLAS threads instead of ranks (only when there are 2 ranks on one machine).

While rank 0 runs alone, rank 1 sleeps in short naps (no busy MPI wait on the
core rank 0's work would otherwise share).  Throughput is samples per second
of the global batch; the ratios are against ``1 process``.  The Allreduce
share is rank 0's time inside the per-step Allreduce (``fit``'s
``allreduce_seconds``, waiting for the other rank included) over the step
time; ``bare Allreduce`` is the time of the same 1 MiB Allreduce alone.
ReLU, softmax cross-entropy, float32, plain SGD, ``shuffle=False``.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

import fastnet as fn
from fastnet.distributed import mpi
from fastnet.info import environment

from .common import classification_inputs
from .latency import SIZES, build_mlp

EPOCHS = 3


def nap_until_released(comm):
    """Rank 1's wait while rank 0 runs alone: sleep, don't spin."""
    req = comm.irecv(source=0, tag=7)
    while True:
        done, _ = req.test()
        if done:
            return
        time.sleep(0.002)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="256,4096")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="seconds of one epoch in a block")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--out", default="mpi-out")
    args = parser.parse_args(argv)
    MPI = mpi()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if size != 2:
        raise SystemExit(f"run this under mpiexec -n 2 (got {size} rank(s))")
    solo = comm.Split(0 if rank == 0 else MPI.UNDEFINED, 0)
    same_machine = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size() == 2
    fn.set_num_threads(1)
    if args.backend != "numpy":
        fn.warmup()
    results = []
    for G in [int(b) for b in args.batches.split(",")]:
        # steps per block: about args.seconds at 1 process, measured once
        probe = build_mlp(args.backend)
        Xp, yp = classification_inputs(G, SIZES[0], SIZES[-1], np.float32)
        if rank == 0:
            probe.fit(Xp, yp, batch_size=G, progress=False)
            start = time.perf_counter()
            probe.fit(Xp, yp, batch_size=G, progress=False)
            per_step = time.perf_counter() - start
        steps = comm.bcast(max(4, int(args.seconds / per_step)) if rank == 0 else None)
        configs = {"1 process": (None, G, 1), "1 rank": (solo, G, 1),
                   "2 ranks, strong": (comm, G // 2, 2), "2 ranks, weak": (comm, G, 2)}
        if same_machine:
            configs["1 process, 2 threads"] = (None, G, 2)
        nets = {name: build_mlp(args.backend) for name in configs}
        shards = {name: classification_inputs(steps * b, SIZES[0], SIZES[-1], np.float32)
                  for name, (_, b, _) in configs.items()}
        times = {name: [] for name in configs}
        share = {name: [] for name in configs}
        for round_ in range(args.rounds + 1):  # round 0 is warm-up
            names = list(configs) if round_ % 2 else list(configs)[::-1]
            for name in names:
                where, b, width = configs[name]
                alone = where is not comm
                threads = width if where is None else 1
                if alone and rank == 1:
                    nap_until_released(comm)
                    continue
                if threads != 1:
                    fn.set_num_threads(threads)
                if not alone:
                    comm.Barrier()
                X, y = shards[name]
                start = time.perf_counter()
                hist = nets[name].fit(X, y, epochs=EPOCHS, batch_size=b, shuffle=False, progress=False,
                                      comm=None if where is None else where)
                elapsed = time.perf_counter() - start
                if threads != 1:
                    fn.set_num_threads(1)
                if alone:
                    comm.send(None, dest=1, tag=7)
                if round_:
                    times[name].append(elapsed / (EPOCHS * steps))
                    share[name].append(sum(hist.get("allreduce_seconds", [0.0])) / elapsed)
        # the bare Allreduce of the gradient buffer, both ranks
        buf = np.zeros(sum(p.size for p in nets["1 process"].parameters()) + 3, np.float32)
        comm.Barrier()
        bare = []
        for _ in range(50):
            start = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf)
            bare.append(time.perf_counter() - start)
        if rank == 0:
            base = statistics.median(times["1 process"])
            for name, (_, b, _threads) in configs.items():
                t = statistics.median(times[name])
                global_batch = b * (2 if "2 ranks" in name else 1)
                results.append({"global_batch": G, "config": name, "local_batch": b,
                                "step_seconds": t, "samples_per_second": global_batch / t,
                                "throughput_ratio": (global_batch / t) / (G / base),
                                "allreduce_share": statistics.median(share[name]),
                                "bare_allreduce_seconds": statistics.median(bare), "steps": steps})
    if rank == 0:
        print(f"{'G':>5} {'configuration':<22} {'local B':>7} {'step ms':>9} {'samples/s':>10} "
              f"{'vs 1 process':>12} {'Allreduce share':>15}")
        for r in results:
            print(f"{r['global_batch']:>5} {r['config']:<22} {r['local_batch']:>7} "
                  f"{r['step_seconds'] * 1e3:>9.2f} {r['samples_per_second']:>10.0f} "
                  f"{r['throughput_ratio']:>12.2f} {r['allreduce_share']:>15.1%}")
        print(f"bare 1 MiB Allreduce: {results[0]['bare_allreduce_seconds'] * 1e6:.0f} us (median of 50)")
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "scaling.json")
        with open(path, "w") as f:
            json.dump({"environment": environment(), "mpi": MPI.Get_library_version().splitlines()[0],
                       "rounds": args.rounds, "results": results}, f, indent=1)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

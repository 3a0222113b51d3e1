"""Where a fused step by BLAS spends its time: CPU cycles per phase of the compiled step.

    python benchmarks/step_phases.py [--sizes 100-256-128-5] [--batch 256] [--optimizer momentum]
                                     [--threads 2,1] [--rev HEAD] [--seconds 0.3] [--rounds 5]

The fused step of REV (default HEAD) with ``step_phases.patch`` applied
(``baseline.patched``: a scratch commit, nothing of the checkout changes)
reads the CPU's cycle counter between its parts and sums the differences into
its plan's scratch space (unused by the products by BLAS); per round of
``--seconds`` of ``train_step`` calls on one batch, this prints the cycles a
step spends in each part:

* ``fwd_gemm``, ``fwd_epi``: the products x @ w; bias and activation;
* ``loss``: the loss and its gradient;
* ``bwd_epi``, ``bwd_gemm``: activation gradient and bias gradient; dz @ w.T;
* ``bounds``: the scans of each layer's input and gradient and the update bounds;
* ``upd_gemm``, ``upd_epi``: the weight-gradient products; the updates after them;
* ``rest``: from the last mark to the end (the bounds' copy; and where the patch
  marks no update, plain SGD with weight decay, that update's product and passes).

Then the step's time (``train_step``, so with its Python) and the same-shaped
bare products (``jit_vs_numpy.blas_case``, from Python), timed in the same
round.  ``--threads 2,1``: a set of rounds with each BLAS thread count
(``threadpoolctl``): what the passes cost after products that two cores wrote
against one.  The counter ticks at the TSC's rate, not the core's clock.
The MLP is ``jit_vs_numpy.mlp``'s, float32.
Only the products by BLAS are probed (the tiles' steps use the scratch): the
batch must be past the tiles' batches.  One timing job at a time.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import load_baseline  # noqa: E402
from jit_vs_numpy import OPTIMIZERS, blas_case, mlp  # noqa: E402

from fastnet.info import environment  # noqa: E402

PHASES = ("fwd_gemm", "fwd_epi", "loss", "bwd_epi", "bwd_gemm", "bounds", "upd_gemm", "upd_epi", "rest")
STEPS = len(PHASES)  # the patch's slot for the count of steps, after the phases'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100-256-128-5")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS), default="momentum")
    parser.add_argument("--threads", default="2,1", help="BLAS thread counts, comma-separated")
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--seconds", type=float, default=0.3, help="of steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split("-")]
    env = environment()
    print(f"{env['cpu']}, {env['cores']} cores; {args.rev} with step_phases.patch", flush=True)
    mod = load_baseline(args.rev, Path(__file__).resolve().parent / "step_phases.patch")
    net = mlp(sizes, "numba", mod, args.optimizer)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=args.batch)
    net.train_step(x, y)
    path, plan, _ = mod.training.paths.execution_plan(net, args.batch)
    if path != "fused" or plan.gemm[0] == 0:
        sys.exit(f"B = {args.batch} is not a fused step by BLAS here: pick a larger batch")
    if plan.scratch.nbytes < 8 * 16:
        sys.exit("the plan's scratch is smaller than the patch's 16 counters")
    counters = plan.scratch[:8 * 16 // plan.scratch.itemsize].view(np.int64)
    bare = blas_case(sizes, args.batch, rng, first_dx=False)
    print(f"{args.sizes}, {args.optimizer}, B = {args.batch}: cycles per step")
    print(f"{'threads':>7s} " + " ".join(f"{p:>9s}" for p in PHASES)
          + f" {'sum':>9s} {'step us':>8s} {'bare us':>8s}")
    for threads in (int(t) for t in args.threads.split(",")):
        with threadpool_limits(threads, user_api="blas"):
            for _ in range(20):
                net.train_step(x, y)
            for _ in range(args.rounds):
                counters[:] = 0
                start, n = time.perf_counter(), 0
                while time.perf_counter() - start < args.seconds:
                    net.train_step(x, y)
                    n += 1
                step = (time.perf_counter() - start) / n
                start = time.perf_counter()
                for _ in range(n):
                    bare()
                products = (time.perf_counter() - start) / n
                if counters[STEPS] != n:
                    sys.exit(f"the patch counted {counters[STEPS]} steps of {n}: not the patched step")
                per = counters[:len(PHASES)] / n
                print(f"{threads:7d} " + " ".join(f"{c:9.0f}" for c in per)
                      + f" {per.sum():9.0f} {step * 1e6:8.1f} {products * 1e6:8.1f}", flush=True)


if __name__ == "__main__":
    main()

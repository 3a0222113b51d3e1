"""Measure where the JIT path's compiled loops beat BLAS, per product and batch size.

    python benchmarks/kernel_thresholds.py [N_IN N_OUT]   (default 512 512)

Times, side by side in one process (medians after warm-up), ``x.T @ dz`` and
``dz @ w.T`` by NumPy's BLAS and by ``fastnet.kernels._numba``'s loops for
batch sizes 1 to 32, float32.  The thresholds in ``kernels/_numba.py``
(``DW_LOOPS_*``, ``DX_LOOPS_BATCHES``) come from this table on the target
machine; re-measure them here when the machine or OpenBLAS changes.
"""

import sys

import numpy as np

import fastnet as fn
from fastnet._timing import compare
from fastnet.kernels import _numba as J


def _candidates(x, w, dz):
    dw, dx = np.empty_like(w), np.empty_like(x)
    return {
        "dw loops": lambda: J._weight_grad_small(x, dz, dw),
        "dw blas": lambda: np.matmul(x.T, dz, out=dw),
        "dx loops": lambda: J._input_grad_small(dz, w, dx),
        "dx blas": lambda: np.matmul(dz, w.T, out=dx),
    }


def main(n_in=512, n_out=512):
    fn.warmup()
    print(f"{n_in}x{n_out} float32, us per call (median)")
    print(f"{'B':>3} {'dw loops':>9} {'dw blas':>9} {'dx loops':>9} {'dx blas':>9}")
    for batch in (1, 2, 3, 4, 6, 8, 12, 16, 32):
        rng = np.random.default_rng(batch)
        x = rng.standard_normal((batch, n_in)).astype(np.float32)
        w = rng.standard_normal((n_in, n_out)).astype(np.float32)
        dz = rng.standard_normal((batch, n_out)).astype(np.float32)
        res = compare(_candidates(x, w, dz), repeats=5, target_seconds=0.005)
        print(f"{batch:3d} " + " ".join(f"{res[k]['median'] * 1e6:9.1f}" for k in res))


if __name__ == "__main__":
    main(*(int(v) for v in sys.argv[1:3]))

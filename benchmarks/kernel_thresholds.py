"""Measure where the JIT path's compiled loops beat BLAS, per product and batch size.

    python benchmarks/kernel_thresholds.py [N_IN N_OUT]   (default 512 512)

Times, side by side in one process (medians after warm-up), ``x.T @ dz`` and
``dz @ w.T`` by NumPy's BLAS and by ``fastnet.kernels.numba``'s loops for
batch sizes 1 to 32, float32 (``x.T @ dz`` by row loops and by register tiles),
and the forward pass (``x @ w``, bias and ReLU) by ``dense.forward_tiles`` and
``FORWARD_ROWS`` (register tiles and loops) against the layer's BLAS forward.
The thresholds in ``kernels/numba/tuning.py``
(``DW_LOOPS_MAX_BATCH``, ``DX_LOOPS_*``, ``FWD_LOOPS_*``) come from this table
(``DW_TILES_MAX_BATCH`` from it and from whole layer passes, where BLAS's
threads stay warm); they differ between machines, so there is one set per
machine class there.  Re-measure them when the machine or OpenBLAS changes.
"""

import sys

import numpy as np

import fastnet as fn
from fastnet.kernels import _blas
from fastnet.kernels.numba import activations, dense
from fastnet.timing import compare

NAMES = ("fwd loops", "fwd blas", "dw loops", "dw tiles", "dw blas", "dx loops", "dx blas")


def _candidates(x, w, dz):
    dw, dx = np.empty_like(w), np.empty_like(x)
    b, a, y = np.zeros((1, w.shape[1]), w.dtype), np.empty_like(dz), np.empty_like(dz)
    relu = fn.kernels.RELU
    batch = x.shape[0]

    def fwd_loops():
        if batch >= 4:
            dense.forward_tiles(x, w, b, a)
        if batch % 4:
            dense.FORWARD_ROWS[dense.forward_rows_code(batch)](x, w, b, a)
        activations.FORWARD[relu](b, 0.0, a, y, False)

    return {
        "fwd loops": fwd_loops,
        "fwd blas": lambda: (np.matmul(x, w, out=a), activations.forward_epilogue(b, relu, 0.0, a, y)),
        "dw loops": lambda: dense.weight_grad_small(x, dz, dw),
        "dw tiles": lambda: dense.weight_grad_tiled(x, dz, dw),
        "dw blas": lambda: _blas.gemm(1.0 / batch, x.T, dz, 0.0, dw) or np.matmul(x.T, dz, out=dw),
        "dx loops": lambda: dense.INPUT_GRAD_SMALL[dense.input_grad_code(batch)](dz, w, dx),
        "dx blas": lambda: np.matmul(dz, w.T, out=dx),
    }


def main(n_in=512, n_out=512):
    fn.warmup()
    print(f"{n_in}x{n_out} float32, us per call (median)")
    print(f"{'B':>3} " + " ".join(f"{name:>9}" for name in NAMES))
    for batch in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32):
        rng = np.random.default_rng(batch)
        x = rng.standard_normal((batch, n_in)).astype(np.float32)
        w = rng.standard_normal((n_in, n_out)).astype(np.float32)
        dz = rng.standard_normal((batch, n_out)).astype(np.float32)
        res = compare(_candidates(x, w, dz), repeats=5, target_seconds=0.005)
        print(f"{batch:3d} " + " ".join(f"{res[k]['median'] * 1e6:9.1f}" for k in NAMES))


if __name__ == "__main__":
    main(*(int(v) for v in sys.argv[1:3]))

"""Every measured threshold of the compiled path, with the machine and the command
it was measured with (no twin in ``fastnet.kernels.numpy``: the reference has no
choices to make).

Where compiled loops beat OpenBLAS depends on the machine (its L2 and
OpenBLAS's kernels for it), so the product thresholds come in two sets, each
measured on a 2-core machine, float32:

* Intel's Sapphire, Emerald and Granite Rapids cores (``cpu.WIDE_VECTORS``;
  measured on Emerald Rapids, 2 MiB L2 per core, with the loops' 512-bit vectors);
* all other cores, older AVX-512 Xeons included (measured on AMD Zen 3, 512 KiB
  L2 per core).

Re-measure them there when the machine or OpenBLAS changes:
``python benchmarks/kernel_thresholds.py N_IN N_OUT`` for the products,
``python benchmarks/latency.py`` for the fused step's batch limits.
"""

import math

from fastnet.kernels import ELU, SIGMOID, SOFTPLUS, TANH

from .cpu import WIDE_VECTORS, host_cpu_name


def loops_up_to(table, w_bytes):
    """The batch paired with the first weights-bytes limit of ``table`` above ``w_bytes``."""
    return next(batch for limit, batch in table if w_bytes < limit)


# -- products: compiled loops or BLAS, by batch size ----------------------------------------
# Emerald Rapids: OpenBLAS's x.T @ dz for one row (an outer product) costs
# 300-3000 us where writing dw takes 20-300 us.  For more rows it depends on
# the weights' size:
# * below 1 MiB (256 x 256, 784 x 256) the loops win at 2 rows (1.5x), and
#   from 4 rows on the two are level or BLAS wins;
# * 1-2 MiB, within a core's L2 (512 x 512, 640 x 640): the loops win up to
#   12 rows, by 1.3-2x;
# * 2-4 MiB (896 x 896): up to 4 rows (265 against 422 us at B = 4);
# * 4 MiB (1024 x 1024): up to 8 rows (412 against 918 us at B = 8).
# dz @ w.T for 2 to 12 rows costs 1.1-2.5x our dot products below 2 MiB, and
# for 2 to 8 rows from there on.  x @ w stays on BLAS (measured before the
# register tiles; not re-measured there).
#
# Zen 3 (784 x 256, 512 x 512, 1024 x 1024): OpenBLAS is slow for 2-7 rows (at
# 1024 x 1024 x @ w took 64 us for one row, 295-530 us for 2-6 and 245 for 8).
# Our loops win x @ w and dz @ w.T for 2-6 rows (1.3-3x), x.T @ dz up to 4 rows
# (1.1-2.2x; level at 6), at every size; from 8 rows on BLAS wins or ties.
#: (weights bytes below, largest batch) pairs, in order: x.T @ dz by loops up to that batch.
DW_LOOPS_MAX_BATCH = ((1 << 20, 2), (2 << 20, 12), (4 << 20, 4), (math.inf, 8)) if WIDE_VECTORS \
    else ((math.inf, 4),)
#: dz @ w.T (and x @ w) by loops for batches from DX_LOOPS_MIN_BATCH (FWD_...) up
#: to the batch paired with the first weights-bytes limit above the weights' size.
DX_LOOPS_MIN_BATCH = 2
DX_LOOPS_MAX_BATCH = ((2 << 20, 12), (math.inf, 8)) if WIDE_VECTORS else ((math.inf, 6),)
FWD_LOOPS_MIN_BATCH = 2
FWD_LOOPS_MAX_BATCH = ((math.inf, 1),) if WIDE_VECTORS else ((math.inf, 6),)
#: x.T @ dz by register tiles (``dense.weight_grad_tiled``) for batches above the
#: loops' up to this, on non-``WIDE_VECTORS`` machines: where the weights fit a
#: core's L2 with room to spare.  Measured on Zen 3, a whole layer forward +
#: backward (dx included) against dw by BLAS, side by side, three runs: 128 x 128
#: 1.23-1.64x faster at B = 5-32, 256 x 256 1.08-1.37x at 5-16 and 0.98-1.04x at
#: 32; with larger weights it lost (784 x 256 0.78-1.07x, 512 x 512 0.91-1.08x,
#: 1024 x 1024 0.62-0.94x at B = 5-32), so they keep BLAS.  Per product
#: (``kernel_thresholds.py``) OpenBLAS's x.T @ dz took 1.2-3.7x the tiles' time
#: at 12-16 rows of 128 x 128 to 256 x 256, but there its threads were cold
#: between calls.
DW_TILES_MAX_BATCH = ((math.inf, 0),) if WIDE_VECTORS else ((512 << 10, 32), (math.inf, 0))

#: The forward pass's register tiles run over the rows of w in blocks of this
#: many: each panel of w (three vectors wide) is read once per four rows of x, and
#: a block of it is still cached for the next four, where a whole panel of 784
#: rows 1 KiB apart was not (rows that far apart share few cache sets).  Measured
#: against whole panels, Zen 3, ``kernel_thresholds.py``'s forward column: 16 x 784
#: x 256 1.22x, 8 x 784 x 256 1.15x, 16 x 512 x 512 1.11x faster, 16 x 256 x 256
#: level; blocks of 64 and 256 rows within 5% of 128.
FWD_K_BLOCK = 128

# -- activations: compiled passes or NumPy's ufuncs -------------------------------------------
# numba cannot vectorise libm's transcendental functions (that needs SVML, which
# PyPI's llvmlite lacks), so a compiled pass of sigmoid, tanh, elu or softplus
# runs one scalar call per element: measured up to 35 times slower than NumPy's
# SIMD ufuncs (tanh at 2048 x 512; sigmoid 2x at 16 x 512; elu's gradient 1.3x;
# Zen 3, the forward and backward columns of ``fastnet profile --activations
# sigmoid,tanh,elu,softplus`` against the NumPy backend).  For those the layered path
# composes the reference's ufunc code (which allocates temporaries) instead.
#: Activation codes whose forward pass takes NumPy's ufuncs on the layered path.
UFUNC_FORWARD = (SIGMOID, TANH, ELU, SOFTPLUS)
#: Activation codes whose gradient takes NumPy's ufuncs on the layered path.
UFUNC_GRAD = (ELU,)

# -- the fused training step ----------------------------------------------------------------
#: Batches up to this size train by one fused compiled call (numba, SGD):
#: measured faster than the paths it replaces up to here.  784-256-256-10 MLP,
#: Zen 3, side by side (``latency.py``): against sgd-in-gemm (plain SGD)
#: 1.21-1.32x at B = 16, 1.29-1.31x at 20, 1.13-1.17x at 24, level at 32,
#: 0.75-0.98x at 40 (three runs); against layered with momentum 0.9, 1.11-1.23x
#: at 16-20, 0.95-0.98x at 24.
FUSED_MAX_BATCH = 20
#: ... but only up to this size when a layer's weights reach FUSED_BIG_WEIGHTS
#: bytes: there BLAS's x @ w pulls ahead from about 8 rows (a 512 x 512 layer
#: at 16 rows: fused 0.92x the sgd-in-gemm path; 1024 x 1024: 0.71x; at 8-12
#: rows 0.98-1.06x; Zen 3, side by side).
FUSED_MAX_BATCH_BIG_WEIGHTS = 8
FUSED_BIG_WEIGHTS = 1 << 20


#: Adam's fused step keeps the tiles up to this many rows, in FUSED_MAX_BATCH's
#: place (the big weights' limit still applies): its update is one pass over
#: w, dw, m and v either way, and after BLAS's two-thread product of dw that
#: pass reads on one core what both cores wrote (see ``MOMENTUM_FLUSH_EVERY``).  The fused Adam
#: step by the tiles against by BLAS, side by side, Zen 3: 784-256-256-10 1.45x
#: faster at B = 21, 1.30x at 32, 1.10x at 40, 1.01x at 48, 0.89x at 64;
#: 512-384-128-20 1.38x at 24, 1.23x at 32, 1.11x at 40, 1.04x at 48;
#: 100-256-128-5 1.44x at 24, 1.29x at 32, 1.09x at 48.  (Momentum, since its
#: update is BLAS's ``?axpy``: 1.09x at 16, 0.98x at 20 on 784-256-256-10, 0.92x
#: at 16 on 512-384-128-20; plain SGD 1.05x at 24, 0.93x at 32: both keep
#: FUSED_MAX_BATCH.)
#: On ``ADAM_BY_BLAS_CPUS`` (AMD Zen 4) BLAS is the faster from 21 rows, as for
#: plain SGD, so Adam there keeps FUSED_MAX_BATCH: by BLAS against by the tiles,
#: side by side (``fastnet.timing.compare``, the MLPs of ``jit_vs_numpy.py``),
#: 784-256-256-10 0.92x at B = 16, 1.04x at 20, 1.10-1.13x at 21-24, 1.24-1.39x at
#: 32, 1.30-1.33x at 40; 512-384-128-20 0.96x, 1.02x, 1.15-1.24x, 1.24-1.43x,
#: 1.30-1.38x; 100-256-128-5 0.92x, 0.99x, 0.98-1.04x, 1.02-1.05x, 1.04-1.05x
#: (two runs).
ADAM_BY_BLAS_CPUS = ("znver4",)
FUSED_MAX_BATCH_ADAM = FUSED_MAX_BATCH if host_cpu_name() in ADAM_BY_BLAS_CPUS else 40


def fused_by_blas(batch, w_bytes, adam=False):
    """Whether the fused step's products go to BLAS (else to the register tiles
    and compiled loops) for a batch of this size, ``w_bytes`` the largest
    layer's weights, ``adam`` whether the optimizer is Adam: above
    ``FUSED_MAX_BATCH`` rows (Adam: ``FUSED_MAX_BATCH_ADAM``), or above
    ``FUSED_MAX_BATCH_BIG_WEIGHTS`` with weights of ``FUSED_BIG_WEIGHTS`` or more."""
    if w_bytes >= FUSED_BIG_WEIGHTS:
        return batch > FUSED_MAX_BATCH_BIG_WEIGHTS
    return batch > (FUSED_MAX_BATCH_ADAM if adam else FUSED_MAX_BATCH)


#: The fused step's momentum by BLAS (no Nesterov) flushes the velocities'
#: subnormals on the plan's first step and then on one step in this many; on
#: the others ``w -= lr v`` is BLAS's ``?axpy``, on its threads, which cannot
#: flush.  The flushing pass runs on one core, after a product both cores
#: wrote v in: 784 x 256 float32 after the two-thread ``v = mu v + x.T @ g /
#: B``, the pass took 80 us more than the product at B = 32, ``?axpy`` 17 us
#: (Zen 3).  A velocity that decays into the subnormals (a dead unit) stays
#: there at most this many steps, then is 0 for good (``flush_subnormal``:
#: left alone it would stay subnormal, and slow, for ever).
MOMENTUM_FLUSH_EVERY = 16

#: Plain SGD of at least this many rows updates w by register tiles, straight
#: from x.T @ g (1.25-1.8x faster than the row loops at 784 x 256, B = 5-16,
#: Zen 3, the fused step side by side in ``latency.py``; at B <= 4 the loops, one
#: sweep over each row of w, win).
UPDATE_TILES_MIN_BATCH = 5

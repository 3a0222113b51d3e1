"""The register tile: one block of a small matrix product kept in vector registers
(no twin in ``fastnet.kernels.numpy``: it is a building block of ``dense`` and
``fused``, which have theirs).

The small-batch products of the forward pass (x @ w) and of the update (x.T @ g)
are walked in tiles of R rows by V vectors of the output that stay in registers
for the whole reduction.  numba's own loops cannot do this: they keep such a
tile in memory (nothing tells LLVM that the output does not alias the inputs),
and numba leaves LLVM's SLP vectoriser off.  So the tile's loop is written in
LLVM IR here.  Measured on a 2-core Zen 3, 784 x 256 and B = 16: 4 x 3 ymm tiles
29-31 GFMA/s against 15-17 for the row-sweeping loops they replaced (OpenBLAS:
31-42).
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .cpu import DISABLED, lanes


@intrinsic(prefer_literal=True)
def _tile_fma(typingctx, R, V, c, c0, ldc, a, a0, a_rs, a_ks, b, b0, ldb, n_k, alpha):
    arrays = (c, a, b)
    if not (isinstance(R, types.IntegerLiteral) and isinstance(V, types.IntegerLiteral)
            and all(isinstance(t, types.Array) and t.layout == "C" and t.dtype == c.dtype
                    for t in arrays)):
        return None
    n_r, n_v, dt, i = R.literal_value, V.literal_value, c.dtype, types.intp
    sig = types.void(R, V, c, i, i, a, i, i, i, b, i, i, i, dt)

    def codegen(context, builder, signature, args):
        _, _, c_, c0_, ldc_, a_, a0_, a_rs_, a_ks_, b_, b0_, ldb_, n_k_, alpha_ = args
        T = context.get_value_type(dt)
        size = context.get_abi_sizeof(T)
        n_lanes = lanes(size)
        vec = ir.VectorType(T, n_lanes)
        cd, ad, bd = (context.make_array(t)(context, builder, value=v).data
                      for t, v in zip(arrays, (c_, a_, b_), strict=True))

        def const(n):
            return ir.Constant(cgutils.intp_t, n)

        def at(base, off):
            return builder.gep(base, [off], source_etype=T)

        def vload(base, off):
            return builder.load(builder.bitcast(at(base, off), vec.as_pointer()), align=size, typ=vec)

        i32 = ir.IntType(32)
        zeros = ir.Constant(ir.VectorType(i32, n_lanes), [0] * n_lanes)

        def splat(s):
            one = builder.insert_element(ir.Constant(vec, ir.Undefined), s, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, one, zeros)

        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec] * 3),
            f"llvm.fmuladd.v{n_lanes}f{8 * size}")
        acc = [[cgutils.alloca_once(builder, vec) for _ in range(n_v)] for _ in range(n_r)]
        for row in acc:
            for cell in row:
                builder.store(ir.Constant(vec, None), cell)
        with cgutils.for_range(builder, n_k_) as loop:
            k = loop.index
            b_k = builder.add(b0_, builder.mul(k, ldb_))
            bv = [vload(bd, builder.add(b_k, const(v * n_lanes))) for v in range(n_v)]
            a_k = builder.add(a0_, builder.mul(k, a_ks_))
            for r in range(n_r):
                s = splat(builder.load(at(ad, builder.add(a_k, builder.mul(a_rs_, const(r)))), typ=T))
                for v in range(n_v):
                    builder.store(builder.call(fmuladd, [s, bv[v], builder.load(acc[r][v], typ=vec)]),
                                  acc[r][v])
        al = splat(alpha_)
        for r in range(n_r):
            c_r = builder.add(c0_, builder.mul(ldc_, const(r)))
            for v in range(n_v):
                p = builder.bitcast(at(cd, builder.add(c_r, const(v * n_lanes))), vec.as_pointer())
                old = builder.load(p, align=size, typ=vec)
                builder.store(builder.call(fmuladd, [al, builder.load(acc[r][v], typ=vec), old]), p,
                              align=size)
        return context.get_dummy_value()

    return sig, codegen


def _tile_fma_python(R, V, c, c0, ldc, a, a0, a_rs, a_ks, b, b0, ldb, n_k, alpha):
    """``tile_fma`` in NumPy, for kernels run as Python (NUMBA_DISABLE_JIT): on
    strided views (no copies, so a train step still allocates no workspace-sized
    arrays), with the bounds the compiled tile trusts its callers to keep checked."""
    width, item = V * lanes(c.itemsize), c.itemsize
    cf, af, bf = c.reshape(-1), a.reshape(-1), b.reshape(-1)
    last_a = a0 + (R - 1) * a_rs + (n_k - 1) * a_ks if n_k else a0
    if not (0 <= c0 and c0 + (R - 1) * ldc + width <= cf.size and 0 <= a0 and last_a < af.size
            and 0 <= b0 and b0 + max(n_k - 1, 0) * ldb + width <= bf.size):
        raise IndexError("register tile out of bounds")
    view = np.lib.stride_tricks.as_strided
    b_t = view(bf[b0:], (n_k, width), (ldb * item, item), writeable=False)
    with np.errstate(all="ignore"):
        for r in range(R):
            a_r = view(af[a0 + r * a_rs:], (n_k,), (a_ks * item,), writeable=False)
            cf[c0 + r * ldc:c0 + r * ldc + width] += c.dtype.type(alpha) * (a_r @ b_t)


#: ``tile_fma(R, V, c, c0, ldc, a, a0, a_rs, a_ks, b, b0, ldb, n_k, alpha)``:
#: c[c0 + r ldc + j] += alpha * sum over k < n_k of a[a0 + r a_rs + k a_ks] * b[b0 + k ldb + j]
#: for r < R and j < V * lanes, on the flat elements of C-contiguous arrays of
#: one dtype (R and V literal integers; no bounds checks: the callers' loops
#: keep inside).
tile_fma = _tile_fma_python if DISABLED else _tile_fma

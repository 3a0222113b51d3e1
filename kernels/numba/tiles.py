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


def _emit_tile(context, builder, dt, n_r, n_v, cd, c0_, ldc_, ad, a0_, a_rs_, a_ks_, bd, b0_, ldb_, n_k_,
               alpha_):
    """Emit one tile at the builder's position, on data pointers (``cd``, ``ad``,
    ``bd``: c, a and b): c[c0 + r ldc + j] += alpha * sum over k < n_k of
    a[a0 + r a_rs + k a_ks] * b[b0 + k ldb + j] for r < n_r and j < n_v * lanes
    (n_v = 0: j < 1, in scalars), on the flat elements of C-contiguous arrays of
    one dtype.  No bounds checks: ``product``'s loops keep inside."""
    T = context.get_value_type(dt)
    size = context.get_abi_sizeof(T)
    scalar = n_v == 0  # V = 0: one column, in scalars (the columns after the last vector)
    n_lanes = 1 if scalar else lanes(size)
    vec = T if scalar else ir.VectorType(T, n_lanes)
    cols = 1 if scalar else n_v

    def const(n):
        return ir.Constant(cgutils.intp_t, n)

    def at(base, off):
        return builder.gep(base, [off], source_etype=T)

    def vload(base, off):
        if scalar:
            return builder.load(at(base, off), typ=T)
        return builder.load(builder.bitcast(at(base, off), vec.as_pointer()), align=size, typ=vec)

    i32 = ir.IntType(32)
    zeros = ir.Constant(ir.VectorType(i32, n_lanes), [0] * n_lanes)

    def splat(s):
        if scalar:
            return s
        one = builder.insert_element(ir.Constant(vec, ir.Undefined), s, ir.Constant(i32, 0))
        return builder.shuffle_vector(one, one, zeros)

    fmuladd = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [vec] * 3),
        f"llvm.fmuladd.f{8 * size}" if scalar else f"llvm.fmuladd.v{n_lanes}f{8 * size}")
    acc = [[cgutils.alloca_once(builder, vec) for _ in range(cols)] for _ in range(n_r)]
    for row in acc:
        for cell in row:
            builder.store(ir.Constant(vec, None), cell)
    with cgutils.for_range(builder, n_k_) as loop:
        k = loop.index
        b_k = builder.add(b0_, builder.mul(k, ldb_))
        bv = [vload(bd, builder.add(b_k, const(v * n_lanes))) for v in range(cols)]
        a_k = builder.add(a0_, builder.mul(k, a_ks_))
        for r in range(n_r):
            s = splat(builder.load(at(ad, builder.add(a_k, builder.mul(a_rs_, const(r)))), typ=T))
            for v in range(cols):
                builder.store(builder.call(fmuladd, [s, bv[v], builder.load(acc[r][v], typ=vec)]),
                              acc[r][v])
    al = splat(alpha_)
    for r in range(n_r):
        c_r = builder.add(c0_, builder.mul(ldc_, const(r)))
        for v in range(cols):
            p = builder.bitcast(at(cd, builder.add(c_r, const(v * n_lanes))), vec.as_pointer())
            old = builder.load(p, align=size, typ=vec)
            builder.store(builder.call(fmuladd, [al, builder.load(acc[r][v], typ=vec), old]), p,
                          align=size)


def _while(builder, cond, body):
    """while cond(): body(), in LLVM IR (cond returns an i1)."""
    test, run, done = (builder.append_basic_block(n) for n in ("while.cond", "while.body", "while.end"))
    builder.branch(test)
    builder.position_at_end(test)
    builder.cbranch(cond(), run, done)
    builder.position_at_end(run)
    body()
    builder.branch(test)
    builder.position_at_end(done)


@intrinsic(prefer_literal=True)
def _product(typingctx, c, ldc, a, a0, a_rs, a_ks, b, ldb, n_rows, n_k, n_cols, alpha, rows_outer, fours):
    arrays = (c, a, b)
    if not all(isinstance(t, types.Array) and t.layout == "C" and t.dtype == c.dtype for t in arrays):
        return None
    dt, i, bool_ = c.dtype, types.intp, types.boolean
    # literal flags (a constant True or False): only that variant's loops are emitted
    flags = [f.literal_value if isinstance(f, types.BooleanLiteral) else None for f in (rows_outer, fours)]
    sig = types.void(c, i, a, i, i, i, b, i, i, i, i, dt, bool_, bool_)

    def codegen(context, builder, signature, args):
        c_, ldc_, a_, a0_, a_rs_, a_ks_, b_, ldb_, n_rows_, n_k_, n_cols_, alpha_, rows_outer_, fours_ = args
        cd, ad, bd = (context.make_array(t)(context, builder, value=v).data
                      for t, v in zip(arrays, (c_, a_, b_), strict=True))
        n_lanes = lanes(context.get_abi_sizeof(context.get_value_type(dt)))
        intp = cgutils.intp_t

        def const(n):
            return ir.Constant(intp, n)

        def var(value):
            ptr = cgutils.alloca_once(builder, intp)
            builder.store(value, ptr)
            return ptr

        def emit(n_r, n_v, r, j):
            _emit_tile(context, builder, dt, n_r, n_v, cd, builder.add(builder.mul(r, ldc_), j), ldc_, ad,
                       builder.add(a0_, builder.mul(r, a_rs_)), a_rs_, a_ks_, bd, j, ldb_, n_k_, alpha_)

        def tile(wide, four, r, j):
            with builder.if_else(wide) as (then, other):
                for block, n_v in ((then, 3), (other, 1)):
                    with block:
                        if flags[1]:  # a literal True: no one-row tiles
                            emit(4, n_v, r, j)
                            continue
                        with builder.if_else(four) as (by_four, by_one):
                            with by_four:
                                emit(4, n_v, r, j)
                            with by_one:
                                emit(1, n_v, r, j)

        j_end = builder.mul(builder.sdiv(n_cols_, const(n_lanes)), const(n_lanes))
        fours_v = ir.Constant(ir.IntType(1), flags[1]) if flags[1] is not None else fours_

        def four_at(r):
            return builder.or_(fours_v, builder.icmp_signed("<=", builder.add(r, const(4)), n_rows_))

        def wide_at(j):
            return builder.icmp_signed("<=", builder.add(j, const(3 * n_lanes)), n_cols_)

        def step(ptr, flag, big, small):
            builder.store(builder.add(builder.load(ptr), builder.select(flag, const(big), const(small))), ptr)

        rows = (n_rows_, four_at, 4, 1)  # (end, flag at a start, step if the flag, step if not)
        panels = (j_end, wide_at, 3 * n_lanes, n_lanes)

        def nest(rows_outer):
            """The two loops, rows outer or panels outer, a tile at each (row, panel) start."""
            outer, inner = (rows, panels) if rows_outer else (panels, rows)
            o = var(const(0))

            def outer_body():
                ov = builder.load(o)
                o_flag = outer[1](ov)
                i = var(const(0))

                def inner_body():
                    iv = builder.load(i)
                    i_flag = inner[1](iv)
                    r, four, j, wide = (ov, o_flag, iv, i_flag) if rows_outer else (iv, i_flag, ov, o_flag)
                    tile(wide, four, r, j)
                    step(i, i_flag, inner[2], inner[3])

                _while(builder, lambda: builder.icmp_signed("<", builder.load(i), inner[0]), inner_body)
                step(o, o_flag, outer[2], outer[3])

            _while(builder, lambda: builder.icmp_signed("<", builder.load(o), outer[0]), outer_body)

        if flags[0] is None:
            with builder.if_else(rows_outer_) as (then, other):
                with then:
                    nest(True)
                with other:
                    nest(False)
        else:
            nest(flags[0])
        # the last columns, fewer than a vector: by the tile in scalars, four rows at a time
        with cgutils.for_range(builder, builder.sub(n_cols_, j_end)) as loop:
            jj = builder.add(j_end, loop.index)
            r = var(const(0))

            def four_rows():
                emit(4, 0, builder.load(r), jj)
                step(r, ir.Constant(ir.IntType(1), 1), 4, 4)

            def one_row():
                emit(1, 0, builder.load(r), jj)
                step(r, ir.Constant(ir.IntType(1), 1), 1, 1)

            _while(builder, lambda: builder.icmp_signed("<=", builder.add(builder.load(r), const(4)),
                                                        n_rows_), four_rows)
            _while(builder, lambda: builder.icmp_signed("<", builder.load(r), n_rows_), one_row)
        return context.get_dummy_value()

    return sig, codegen


def _tile_python(R, V, c, c0, ldc, a, a0, a_rs, a_ks, b, b0, ldb, n_k, alpha):
    """One tile (``_emit_tile``, R rows by V vectors) in NumPy, for kernels run
    as Python (NUMBA_DISABLE_JIT): on strided views (no copies, so a train step
    still allocates no workspace-sized arrays), with the bounds the compiled
    tile trusts its callers to keep checked."""
    width, item = (V * lanes(c.itemsize) if V else 1), c.itemsize
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


def _product_python(c, ldc, a, a0, a_rs, a_ks, b, ldb, n_rows, n_k, n_cols, alpha, rows_outer, fours):
    """``product`` as Python (NUMBA_DISABLE_JIT): the same walk, by ``_tile_python``
    (no lists of the starts: a train step allocates next to nothing, ``test_state_safety``)."""
    n_lanes = lanes(c.itemsize)
    j_end = n_cols // n_lanes * n_lanes

    def rows():  # (start, four rows)
        r = 0
        while r < n_rows:
            four = fours or r + 4 <= n_rows
            yield r, four
            r += 4 if four else 1

    def panels():  # (start, three vectors)
        j = 0
        while j < j_end:
            wide = j + 3 * n_lanes <= n_cols
            yield j, wide
            j += 3 * n_lanes if wide else n_lanes

    def tile(r, four, j, wide):
        _tile_python(4 if four else 1, 3 if wide else 1, c, r * ldc + j, ldc, a, a0 + r * a_rs, a_rs,
                         a_ks, b, j, ldb, n_k, alpha)

    if rows_outer:
        for r, four in rows():
            for j, wide in panels():
                tile(r, four, j, wide)
    else:
        for j, wide in panels():
            for r, four in rows():
                tile(r, four, j, wide)
    for jj in range(j_end, n_cols):
        r = 0
        while r + 4 <= n_rows:
            _tile_python(4, 0, c, r * ldc + jj, ldc, a, a0 + r * a_rs, a_rs, a_ks, b, jj, ldb, n_k, alpha)
            r += 4
        while r < n_rows:
            _tile_python(1, 0, c, r * ldc + jj, ldc, a, a0 + r * a_rs, a_rs, a_ks, b, jj, ldb, n_k, alpha)
            r += 1


#: ``product(c, ldc, a, a0, a_rs, a_ks, b, ldb, n_rows, n_k, n_cols, alpha, rows_outer, fours)``: the
#: whole walk of ``dense``'s products in tiles, emitted as LLVM IR into the caller (no numba
#: inlining: see ``dense.product``); rows_outer and fours a literal True or False emit that variant alone.
product = _product_python if DISABLED else _product

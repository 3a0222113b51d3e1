"""``fastnet.kernels._blas.gemm``: C = alpha A @ B + beta C by NumPy's own BLAS
(and ``axpy``, y += alpha x).

Results are checked against the same product in ``np.longdouble``, within
the rounding bound of a length-k dot product: |error| <= (k + 2) eps (|alpha|
|A| @ |B| + |beta| |C|), where eps is the unit roundoff of the inputs' dtype
(k multiply-adds, then the scaling by alpha and the addition of beta C).  The
bound is doubled because the reference itself may carry as much error where
``longdouble`` is no wider than float64.
"""

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from fastnet.kernels import _blas

DTYPES = [np.float32, np.float64]


def _reference(alpha, a, b, beta, c):
    wide = np.longdouble
    ref = alpha * (a.astype(wide) @ b.astype(wide)) + beta * c.astype(wide)
    bound = np.abs(alpha) * (np.abs(a).astype(wide) @ np.abs(b).astype(wide)) + abs(beta) * np.abs(c)
    eps = np.finfo(a.dtype).eps / 2
    return ref, 2 * (a.shape[1] + 2) * eps * bound


def _layouts(rng, m, k, dtype):
    """(m, k) operands in every layout gemm reads in place."""
    size = max(m, k)
    base = rng.standard_normal((2 * size, 3 * size)).astype(dtype)
    return {
        "C-contiguous": np.ascontiguousarray(base[:m, :k]),
        "transposed": np.ascontiguousarray(base[:k, :m]).T,
        "rows of a wider array": base[:m, size:size + k],
        "every other row": base[:2 * m:2, :k],
        "transposed rows of a wider array": base[:k, :m].T,
    }


needs_blas = pytest.mark.skipif(_blas.available() is None, reason="no OpenBLAS found in this process")


@needs_blas
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (0.25, 0.0), (-0.1, 1.0), (1.0 / 3, 0.9)])
def test_gemm_matches_the_product_in_every_layout(dtype, alpha, beta):
    rng = np.random.default_rng(0)
    m, k, n = 7, 33, 5
    for name_a, a in _layouts(rng, m, k, dtype).items():
        for name_b, b in _layouts(rng, k, n, dtype).items():
            c0 = rng.standard_normal((m, n)).astype(dtype)
            c = c0.copy()
            assert _blas.gemm(alpha, a, b, beta, c), (name_a, name_b)
            ref, bound = _reference(alpha, a, b, beta, c0)
            assert np.all(np.abs(c - ref) <= bound), (name_a, name_b)


@needs_blas
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k, n", [(1, 9, 4), (6, 9, 1), (5, 1, 3), (1, 1, 1), (3, 0, 2), (0, 4, 3)])
def test_gemm_at_degenerate_shapes(dtype, m, k, n):
    """One row, one column, k = 1 and empty operands, in each layout."""
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    for name_a, a in _layouts(rng, m, k, dtype).items():
        for name_b, b in _layouts(rng, k, n, dtype).items():
            c0 = rng.standard_normal((m, n)).astype(dtype)
            c = c0.copy()
            assert _blas.gemm(0.5, a, b, 0.25, c), (name_a, name_b)
            ref, bound = _reference(0.5, a, b, 0.25, c0)
            assert np.all(np.abs(c - ref) <= bound), (name_a, name_b)


@needs_blas
@pytest.mark.parametrize("dtype", DTYPES)
def test_beta_zero_ignores_what_c_held(dtype):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((4, 6)).astype(dtype), rng.standard_normal((6, 3)).astype(dtype)
    c = np.full((4, 3), np.nan, dtype)
    assert _blas.gemm(1.0, a, b, 0.0, c)
    ref, bound = _reference(1.0, a, b, 0.0, np.zeros_like(c))
    assert np.all(np.abs(c - ref) <= bound)


@needs_blas
def test_layouts_and_dtypes_blas_cannot_read_are_refused_untouched():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 12)).astype(np.float32)
    b = rng.standard_normal((6, 3)).astype(np.float32)
    c = rng.standard_normal((4, 3)).astype(np.float32)
    before = c.copy()
    assert _blas.gemm(1.0, a[:, ::2], b, 0.0, c) is None  # no unit stride either way
    assert _blas.gemm(1.0, a[:, :6].astype(np.float64), b, 0.0, c) is None  # mixed dtypes
    assert _blas.gemm(1.0, a[:, :6], b, 0.0, np.asfortranarray(c)) is None  # c not C-contiguous
    assert _blas.gemm(1.0, a[:, :6].astype(np.int64), b.astype(np.int64), 0.0, c.astype(np.int64)) is None
    assert _blas.gemm(1.0, a[::-1, :6], b, 0.0, c) is None  # negative strides
    assert _blas.gemm(1.0, a[:, 5::-1], b, 0.0, c) is None
    frozen = c.copy()
    frozen.flags.writeable = False
    assert _blas.gemm(1.0, a[:, :6], b, 0.0, frozen) is None
    square = rng.standard_normal((6, 6)).astype(np.float32)
    assert _blas.gemm(1.0, square, square, 0.0, square) is None  # c overlaps a and b
    raw = np.zeros(4 * 3 * 4 + 1, np.uint8)[1:].view(np.float32).reshape(4, 3)  # misaligned
    assert _blas.gemm(1.0, a[:, :6], b, 0.0, raw) is None
    np.testing.assert_array_equal(c, before)


@needs_blas
def test_sizes_past_the_librarys_integers_are_refused(monkeypatch):
    """A 32-bit BLAS would see a wrapped size; gemm refuses instead (simulated)."""
    monkeypatch.setattr(_blas._library(), "max_int", 5)
    a, b = np.ones((6, 2), np.float32), np.ones((2, 3), np.float32)
    c = np.zeros((6, 3), np.float32)
    assert _blas.gemm(1.0, a, b, 0.0, c) is None
    np.testing.assert_array_equal(c, 0.0)
    assert _blas.gemm(1.0, a[:5], b, 0.0, c[:5])


@needs_blas
def test_mismatched_shapes_raise():
    a, b, c = np.ones((4, 6), np.float32), np.ones((5, 3), np.float32), np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(4, 6\) @ \(5, 3\)"):
        _blas.gemm(1.0, a, b, 0.0, c)


@needs_blas
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [1.0, -0.05, 1.0 / 3])
def test_axpy_matches_the_sum_and_leaves_x(dtype, alpha):
    """One multiply and one add per element, fused or not: the exact sum within
    two roundings of the terms' magnitudes, |error| <= 2u (|y| + |alpha x|) =
    eps (|y| + |alpha x|), u the unit roundoff (the longdouble reference adds
    at most u |ref| more where it is no wider than float64)."""
    rng = np.random.default_rng(3)
    for shape in [(1,), (7,), (257, 3), (784, 256)]:
        x, y0 = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
        x_before, y = x.copy(), y0.copy()
        assert _blas.axpy(alpha, x, y)
        wide = np.longdouble
        ref = y0.astype(wide) + wide(dtype(alpha)) * x.astype(wide)
        bound = np.finfo(dtype).eps * (np.abs(y0).astype(wide) + np.abs(wide(dtype(alpha)) * x))
        assert np.all(np.abs(y - ref) <= bound), shape
        np.testing.assert_array_equal(x, x_before)


@needs_blas
def test_axpy_refuses_what_blas_cannot_take_untouched():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal((4, 6)).astype(np.float32)
    before = y.copy()
    assert _blas.axpy(1.0, x.astype(np.float64), y) is None  # mixed dtypes
    assert _blas.axpy(1.0, x.astype(np.int64), y.astype(np.int64)) is None
    assert _blas.axpy(1.0, np.asfortranarray(x), y) is None  # not C-contiguous
    assert _blas.axpy(1.0, y, y) is None  # overlapping
    frozen = y.copy()
    frozen.flags.writeable = False
    assert _blas.axpy(1.0, x, frozen) is None
    raw = np.zeros(4 * 6 * 4 + 1, np.uint8)[1:].view(np.float32).reshape(4, 6)  # misaligned
    assert _blas.axpy(1.0, x, raw) is None
    np.testing.assert_array_equal(y, before)
    with pytest.raises(ValueError, match=r"\(4, 6\) and \(6, 4\)"):
        _blas.axpy(1.0, x, np.ones((6, 4), np.float32))
    assert _blas.axpy(1.0, x[:0], y[:0])  # nothing to add


def test_numpys_openblas_is_found_when_loaded():
    """NumPy's wheels carry OpenBLAS: when threadpoolctl sees one, gemm must use it."""
    if not any(p.get("internal_api") == "openblas" for p in threadpool_info()):
        pytest.skip("no OpenBLAS loaded in this process")
    assert _blas.available() is not None


def test_without_blas_the_weight_gradient_falls_back_to_numpy(no_direct_blas):
    pytest.importorskip("numba")
    from fastnet.kernels.numba import dense, tuning

    no_direct_blas()
    rng = np.random.default_rng(3)
    # past every loop and tile threshold: the BLAS branch
    batch = max(b for _, b in tuning.DW_LOOPS_MAX_BATCH + tuning.DW_TILES_MAX_BATCH) + 5
    x, dz = rng.standard_normal((batch, 9)), rng.standard_normal((batch, 4))
    dw = np.full((9, 4), np.nan)
    dense.weight_grad(x, dz, dw)
    ref, bound = _reference(1.0 / batch, x.T, dz, 0.0, np.zeros((9, 4)))
    assert np.all(np.abs(dw - ref) <= bound + np.finfo(np.float64).eps * np.abs(ref))

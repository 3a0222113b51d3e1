"""Shared fixtures."""

import pytest


@pytest.fixture
def no_direct_blas(monkeypatch):
    """Call it to make ``fastnet.kernels._blas`` find no library (the NumPy fallback)."""
    from fastnet.kernels import _blas

    def hide():
        monkeypatch.setattr(_blas, "_GEMM", None)
        monkeypatch.setattr(_blas, "_SEARCHED", True)
        assert _blas.available() is None

    return hide

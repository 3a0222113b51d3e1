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


# -- pytest-benchmark (tests/test_bench_kernels.py) ----------------------------------------------
def pytest_addoption(parser):
    parser.addoption("--benchmark-keep-rounds", action="store_true",
                     help="fastnet: keep every round's time in --benchmark-json (default: statistics "
                          "only; the raw rounds made the file 60 MB)")


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """--benchmark-json writes the statistics of each benchmark, not its raw rounds,
    unless --benchmark-keep-rounds is given."""
    if not config.getoption("--benchmark-keep-rounds"):
        for bench in output_json["benchmarks"]:
            bench["stats"].pop("data", None)

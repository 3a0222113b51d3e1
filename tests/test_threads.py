"""fastnet.set_num_threads governs BLAS and numba together."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import fastnet as fn


def _blas_threads():
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


@pytest.fixture
def restore_threads():
    before = fn.get_num_threads()
    yield
    fn.set_num_threads(before)


def test_set_num_threads_limits_blas_and_numba(restore_threads):
    numba = pytest.importorskip("numba")
    fn.resolve_backend("numba")  # numba (and the BLAS it loads) imported
    fn.set_num_threads(1)
    assert _blas_threads() == {1}
    assert fn.get_num_threads() == 1
    assert numba.get_num_threads() == 1
    # results do not depend on the thread count
    net = fn.NeuralNetwork([fn.DenseLayer("relu", 64, neurons_num=300, rng=0, dtype=np.float64),
                            fn.DenseLayer("identity", neurons_num=3, rng=1, dtype=np.float64)],
                           "mse", backend="numba")
    x = np.random.default_rng(0).normal(size=(512, 64))
    one = net.predict(x)
    fn.set_num_threads(2)
    assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    # float64, 64-term sums: orders differ by threads, rounding stays within 64 * eps
    np.testing.assert_allclose(net.predict(x), one, rtol=64 * np.finfo(np.float64).eps, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_set_num_threads_refuses_bad_values(bad, restore_threads):
    before = fn.get_num_threads()
    with pytest.raises((TypeError, ValueError), match="positive integer"):
        fn.set_num_threads(bad)
    assert fn.get_num_threads() == before

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


# -- one network used from several threads -----------------------------------------------
BACKENDS = fn.available_backends()


def _shared_net(backend):
    layers = [fn.DenseLayer("relu", 20, neurons_num=32, rng=0),
              fn.DenseLayer("identity", neurons_num=5, rng=1)]
    return fn.NeuralNetwork(layers, "softmax_xent", fn.SGD(0.05, momentum=0.9), backend=backend)


def _run_threads(work, n_threads):
    """Run work(i) in n_threads threads started together; re-raise their errors."""
    import threading

    barrier, errors, results = threading.Barrier(n_threads), [], [None] * n_threads

    def target(i):
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 (re-raised below)
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_from_several_threads_gives_the_sequential_results(backend):
    """Before the network's lock, 1-2 of 200 results were wrong: the threads
    shared the layers' output buffers.  Batches of several sizes (the
    buffers are views of one workspace) and all three inference methods."""
    net = _shared_net(backend)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 20)).astype(np.float32) for n in (1, 7, 64, 1000)]
    ys = [rng.integers(0, 5, x.shape[0]) for x in batches]
    want = [(net.predict(x), net.predict_proba(x), net.evaluate(x, y))
            for x, y in zip(batches, ys, strict=True)]

    def work(i):
        got = []
        for r in range(60):
            k = (i + r) % len(batches)
            x, y = batches[k], ys[k]
            got.append((k, net.predict(x), net.predict_proba(x), net.evaluate(x, y)))
        return got

    for got in _run_threads(work, 4):
        for k, labels, proba, scores in got:
            np.testing.assert_array_equal(labels, want[k][0])
            np.testing.assert_array_equal(proba, want[k][1])
            assert scores == want[k][2]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [3, 64])  # the fused path and the layered one on numba
def test_training_from_two_threads_is_serialised(backend, batch):
    """Two threads each take steps on the same batch: the steps run one at a
    time, so the result is that of all the steps taken in one thread, bit for bit
    (before: unrelated NumPy or numba errors)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batch, 20)).astype(np.float32)
    y = rng.integers(0, 5, batch)
    shared, alone = _shared_net(backend), _shared_net(backend)
    steps = 25
    losses = _run_threads(lambda i: [shared.train_step(x, y) for _ in range(steps)], 2)
    alone_losses = [alone.train_step(x, y) for _ in range(2 * steps)]
    for p, q in zip(shared.parameters(), alone.parameters(), strict=True):
        np.testing.assert_array_equal(p, q)
    assert sorted(losses[0] + losses[1]) == sorted(alone_losses)

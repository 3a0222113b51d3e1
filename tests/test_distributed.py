"""Data-parallel training under ``mpiexec -n 2`` (fastnet.distributed).

Each test runs tests/mpi_cases.py on two MPI processes in a subprocess with a
timeout (a deadlock fails the test instead of hanging it) and compares what
the ranks wrote with a single-process computation done here.  The tests skip,
with the reason, when mpi4py or mpiexec is missing; set FASTNET_REQUIRE_MPI=1
(CI does) to make that a failure instead.

Tolerances.  Two ranks compute the same global-batch mean gradient as one
process, but summed in another order: each rank's mean over its m rows,
scaled by m / M, then added, against one mean over the M rows of the global
batch.  Each gradient entry then differs by a few roundings of its terms, at
most about (M + 2) eps S, S the sum of the magnitudes of the terms, and
|terms| <= |g| makes that (M + 2) eps |g|.  An SGD step moves a parameter by at
most lr / (1 - momentum) = 1 times the gradient here (lr 0.1, momentum 0.9;
Adam's step is lr = 0.01 times a ratio whose relative error is that of the
gradient), and max|g| < 1, so after k steps the parameters may differ by
k (M + 2) eps: ``assert_close`` allows that, times max(1, |p|).  That is
200 eps for 20 steps of a global batch of 8, and 1010 eps for 5 full-batch
steps over 200 samples.  The JIT backend adds its own roundings of the same
order (contracted multiply-adds, other summation orders).  The worst seen over
every case here was 1.7 eps (float32) and 1.5 eps (float64): the training did
not amplify the roundings.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnet as fn

sys.path.insert(0, str(Path(__file__).parent))
from mpi_cases import SHUFFLE_SEED, make_net, make_optimizer, new_layer, shards  # noqa: E402

HERE = Path(__file__).parent
TIMEOUT = 180  # seconds for one mpiexec run: a cold numba compile in both ranks fits


def _mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None, "mpi4py is not installed (pip install -e '.[mpi]')"
    exe = Path(sys.executable).parent / "mpiexec"
    if not exe.exists():
        found = shutil.which("mpiexec")
        if found is None:
            return None, "no mpiexec next to the Python or on PATH (pip install -e '.[mpi]')"
        exe = Path(found)
    return str(exe), None


MPIEXEC, WHY = _mpiexec()
if MPIEXEC is None and os.environ.get("FASTNET_REQUIRE_MPI") == "1":
    raise RuntimeError(f"FASTNET_REQUIRE_MPI=1 but MPI is unusable: {WHY}")
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason=str(WHY))

EPS = {np.dtype(t): float(np.finfo(t).eps) for t in (np.float32, np.float64)}


def mpiexec(args, cwd=None):
    """``mpiexec -n 2 python ARGS`` with one thread per rank; its stdout, once
    it exited 0 within TIMEOUT seconds."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, *args], capture_output=True, text=True,
                          timeout=TIMEOUT, env=env, cwd=cwd)
    assert proc.returncode == 0, f"mpiexec failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def run_case(tmp_path, case, **opts):
    """Run one case on 2 ranks; returns the two ranks' (report, arrays)."""
    mpiexec([str(HERE / "mpi_cases.py"), case, str(tmp_path), *(f"{k}={v}" for k, v in opts.items())])
    out = []
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        with np.load(tmp_path / f"rank{rank}.npz") as f:
            arrays = dict(f)
        out.append((report, arrays))
    return out


def params_of(arrays, prefix=""):
    return [arrays[f"{prefix}p{i}"] for i in range(sum(1 for k in arrays if k.startswith(prefix + "p")))]


def assert_close(got, want, dtype, steps, terms):
    """Parameters within steps * (terms + 2) eps of each other (module docstring)."""
    tol = steps * (terms + 2) * EPS[np.dtype(dtype)]
    for g, w in zip(got, want, strict=True):
        err = np.abs(g.astype(np.float64) - w) / np.maximum(1.0, np.abs(w))
        assert err.max() <= tol, f"max scaled difference {err.max():.3g} > {tol:.3g}"


def assert_unchanged(ranks):
    """Every rank's parameters are bytewise those it had before the call."""
    for _, arrays in ranks:
        for before, after in zip(params_of(arrays, "before_"), params_of(arrays), strict=True):
            assert np.array_equal(before, after)


def assert_replicas_identical(ranks):
    """The parameters, and the bounds the update checks use: equal bounds make every
    rank refuse the same updates."""
    for a, b in zip(params_of(ranks[0][1]), params_of(ranks[1][1]), strict=True):
        assert np.array_equal(a, b), "the two replicas differ"
    for key in ("bounds", "m_bounds"):
        assert np.array_equal(ranks[0][1][key], ranks[1][1][key]), (key, ranks[0][1][key], ranks[1][1][key])


def reference_sgd(dtype, backend, n0, n1, batch, epochs, shuffle=False, optimizer="sgd",
                  loss="softmax_cross_entropy", steps=None, after_epoch=None):
    """One process: step s trains on rank 0's s-th batch followed by rank 1's
    (each shard in the order its rank's generator shuffles it); ``after_epoch(net,
    epoch)`` is called after each epoch, when given."""
    (X0, y0), (X1, y1) = shards(n0, n1, dtype)
    if loss == "mse":
        y0, y1 = np.eye(5, dtype=dtype)[y0], np.eye(5, dtype=dtype)[y1]
    net = make_net(dtype, backend, seed=0, optimizer=make_optimizer(optimizer), loss=loss)
    rngs = [np.random.default_rng(SHUFFLE_SEED), np.random.default_rng(SHUFFLE_SEED + 1)]
    if steps is None:
        steps = max(-(-n0 // batch), -(-n1 // batch))
    losses, accs = [], []
    for _ in range(epochs):
        if shuffle:
            o0, o1 = rngs[0].permutation(n0), rngs[1].permutation(n1)
        else:
            o0, o1 = np.arange(n0), np.arange(n1)
        loss_sum = correct = 0.0
        for s in range(steps):
            i0, i1 = o0[s * batch:(s + 1) * batch], o1[s * batch:(s + 1) * batch]
            xb, yb = np.concatenate([X0[i0], X1[i1]]), np.concatenate([y0[i0], y1[i1]])
            loss_sum += net.train_step(xb, yb, keep_grads=True) * len(yb)
            if loss != "mse":  # outputs before the update
                correct += np.sum(np.argmax(net.layers[-1].y, axis=1) == yb)
        losses.append(loss_sum / (n0 + n1))
        accs.append(correct / (n0 + n1))
        if after_epoch is not None:
            after_epoch(net, len(losses))
    return net, losses, accs


@needs_mpi
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_ranks_equal_one_process_with_twice_the_batch(tmp_path, dtype):
    """20 steps, local batch 4 on 2 ranks == fit with batch 8 on the interleaved
    samples; rank 1 starts from other weights, so the broadcast is tested too."""
    b, steps = 4, 20
    ranks = run_case(tmp_path, "fit", dtype=np.dtype(dtype).name, batch=b, n0=b * steps, n1=b * steps)
    for report, _ in ranks:
        assert report["error"] is None, report.get("traceback")
    assert not np.array_equal(ranks[0][1]["before_p0"], ranks[1][1]["before_p0"])
    assert_replicas_identical(ranks)

    (X0, y0), (X1, y1) = shards(b * steps, b * steps, dtype)
    X = np.concatenate([np.concatenate([X0[s * b:(s + 1) * b], X1[s * b:(s + 1) * b]]) for s in range(steps)])
    y = np.concatenate([np.concatenate([y0[s * b:(s + 1) * b], y1[s * b:(s + 1) * b]]) for s in range(steps)])
    net = make_net(dtype, "numpy", seed=0)
    history = net.fit(X, y, epochs=1, batch_size=2 * b, shuffle=False, progress=False)
    assert_close(params_of(ranks[0][1]), net.parameters(), dtype, steps, 2 * b)
    # the layers' gradients are the last step's global means, as in one process
    grads = [[arrays[f"grad{i}"] for i in range(len(net.gradients()))] for _, arrays in ranks]
    assert_close(grads[0], net.gradients(), dtype, steps, 2 * b)
    assert all(np.array_equal(a, b) for a, b in zip(*grads, strict=True))
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(ranks[0][0]["history"][key], history[key], rtol=1e-5)
        assert ranks[0][0]["history"][key] == ranks[1][0]["history"][key]


@needs_mpi
@pytest.mark.parametrize(("optimizer", "dtype"), [("sgd", np.float32), ("adam", np.float64)])
def test_numba_backend_agrees(tmp_path, optimizer, dtype):
    """The JIT backend under MPI: the same result as the NumPy single-process
    run.  Every step after the first forms its gradients by the fused step's
    compiled first half (``fused_gradients``, into the reduction buffer) and
    applies the reduced ones by one compiled call (``fused_sgd_apply``); the
    first, which makes the optimizer's state, takes the layered passes and the
    optimizer's kernels.  The layers' gradients are the buffer's views either way.
    (Adam in float64: its step amplifies the rounding of a vanishing gradient by
    up to lr / eps, see test_fused_step.)"""
    ranks = run_case(tmp_path, "fit", backend="numba", batch=4, n0=80, n1=80, epochs=2, optimizer=optimizer,
                     dtype=np.dtype(dtype).name)
    assert all(r["error"] is None for r, _ in ranks), ranks[0][0].get("traceback")
    for key in ("fused_gradient_calls", "fused_apply_calls"):
        assert all(r[key] == 2 * 20 - 1 for r, _ in ranks), (key, [r[key] for r, _ in ranks])
    assert_replicas_identical(ranks)
    assert all("grad0" in arrays for _, arrays in ranks)
    assert np.array_equal(ranks[0][1]["grad0"], ranks[1][1]["grad0"])
    net, losses, _ = reference_sgd(dtype, "numpy", 80, 80, 4, 2, optimizer=optimizer)
    assert_close(params_of(ranks[0][1]), net.parameters(), dtype, 40, 8)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(ranks[0][0]["history"]["loss"], losses, rtol=rtol)


@needs_mpi
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_rank_0_state_is_broadcast_and_shuffling_is_per_rank(tmp_path, optimizer, backend):
    """Rank 1 has trained alone before (other weights, its own velocities or
    moments, its own bounds and, on numba, fused plans made from its state): fit
    starts every replica from rank 0's parameters, optimizer state and bounds.
    Each rank shuffles its shard with its own generator; the shards are uneven,
    so rank 0's last batch is short (3 rows) on numba's compiled steps too."""
    ranks = run_case(tmp_path, "fit", dtype="float64", batch=5, n0=23, n1=31, epochs=3, shuffle=1,
                     optimizer=optimizer, warm1=1, backend=backend)
    assert all(r["error"] is None for r, _ in ranks), ranks[1][0].get("traceback")
    assert_replicas_identical(ranks)
    net, losses, _ = reference_sgd(np.float64, "numpy", 23, 31, 5, 3, shuffle=True, optimizer=optimizer)
    assert_close(params_of(ranks[0][1]), net.parameters(), np.float64, 21, 10)
    np.testing.assert_allclose(ranks[0][0]["history"]["loss"], losses, rtol=1e-12)


@needs_mpi
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_replicas_that_trained_alone_before_start_from_rank_0(tmp_path, optimizer):
    """Both ranks trained alone before, on the numba backend, with the batch size
    of the distributed fit: each has its own parameters, state, update bounds
    and fused plans made from its state.  The broadcast replaces rank 1's; its
    plans are made again from the new state and its bounds from the new
    arrays, so the replicas and their bounds stay identical step after step."""
    ranks = run_case(tmp_path, "fit", dtype="float64", batch=4, n0=40, n1=40, epochs=2,
                     optimizer=optimizer, warm_both=1, backend="numba")
    assert all(r["error"] is None for r, _ in ranks), ranks[1][0].get("traceback")
    assert all(r["fused_apply_calls"] == 2 * 10 for r, _ in ranks), [r["fused_apply_calls"] for r, _ in ranks]
    assert_replicas_identical(ranks)


@needs_mpi
@pytest.mark.parametrize(("n0", "n1", "batch"), [(101, 99, 10), (99, 101, 10), (7, 30, 4)])
def test_uneven_shards(tmp_path, n0, n1, batch):
    """Shards of different sizes: every rank takes the steps of the largest
    shard, short and empty batches weighted by their real size."""
    ranks = run_case(tmp_path, "fit", dtype="float64", batch=batch, n0=n0, n1=n1, epochs=2, val=1)
    for report, _ in ranks:
        assert report["error"] is None, report.get("traceback")
    assert_replicas_identical(ranks)
    net, losses, accs = reference_sgd(np.float64, "numpy", n0, n1, batch, 2)
    steps = 2 * max(-(-n0 // batch), -(-n1 // batch))
    assert_close(params_of(ranks[0][1]), net.parameters(), np.float64, steps, 2 * batch)
    hist = ranks[1][0]["history"]
    np.testing.assert_allclose(hist["loss"], losses, rtol=1e-12)
    np.testing.assert_allclose(hist["accuracy"], accs, rtol=1e-12)
    # validation on each rank's own shard, reported as the mean over all samples
    (X0, y0), (X1, y1) = shards(n0, n1, np.float64)
    want = net.evaluate(np.concatenate([X0, X1]), np.concatenate([y0, y1]))
    np.testing.assert_allclose(hist["val_loss"][-1], want["loss"], rtol=1e-12)
    np.testing.assert_allclose(hist["val_accuracy"][-1], want["accuracy"], rtol=1e-12)


@needs_mpi
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_full_batch_gd_equals_one_process(tmp_path, dtype):
    """mode="gd" on shards of 101 and 99 == gd on the 200 samples in one process."""
    ranks = run_case(tmp_path, "fit", dtype=np.dtype(dtype).name, mode="gd", batch=16, n0=101, n1=99,
                     epochs=5)
    assert all(r["error"] is None for r, _ in ranks), ranks[0][0].get("traceback")
    assert_replicas_identical(ranks)
    (X0, y0), (X1, y1) = shards(101, 99, dtype)
    net = make_net(dtype, "numpy", seed=0)
    history = net.fit(np.concatenate([X0, X1]), np.concatenate([y0, y1]), epochs=5, batch_size=16, mode="gd",
                      shuffle=False, progress=False)
    assert_close(params_of(ranks[0][1]), net.parameters(), dtype, 5, 200)
    np.testing.assert_allclose(ranks[0][0]["history"]["loss"], history["loss"], rtol=1e-5)


@needs_mpi
@pytest.mark.parametrize("case", ["mismatch_sizes", "mismatch_dtype"])
def test_different_replicas_fail_on_every_rank(tmp_path, case):
    ranks = run_case(tmp_path, case)
    for report, _ in ranks:
        assert report["error_type"] == "ValueError"
        assert "replicas differ" in report["error"]
        assert ("layer sizes" if case == "mismatch_sizes" else "dtype") in report["error"]
    assert_unchanged(ranks)  # nothing was broadcast or trained


@needs_mpi
def test_bad_shard_fails_on_every_rank_and_changes_nothing(tmp_path):
    ranks = run_case(tmp_path, "bad_shard")
    (r0, _), (r1, _) = ranks
    assert r1["error_type"] == "ValueError" and "NaN" in r1["error"]  # its own error
    assert r0["error_type"] == "DistributedError" and "rank 1" in r0["error"] and "NaN" in r0["error"]
    assert_unchanged(ranks)


@needs_mpi
def test_divergence_on_one_rank_stops_all(tmp_path):
    """Rank 1's third batch overflows the loss: both ranks raise FloatingPointError
    at that step and neither applies its update."""
    ranks = run_case(tmp_path, "diverge", batch=4, n0=40, n1=40)
    (r0, a0), (r1, a1) = ranks
    assert r1["error_type"] == "FloatingPointError" and "step 3" in r1["error"]
    assert r0["error_type"] == "FloatingPointError" and "rank 1" in r0["error"] and "step 3" in r0["error"]
    assert_replicas_identical(ranks)
    # the parameters are those after two steps
    net, _, _ = reference_sgd(np.float32, "numpy", 40, 40, 4, 1, loss="mse", steps=2)
    assert_close(params_of(a0), net.parameters(), np.float32, 2, 8)


@needs_mpi
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_an_update_that_could_overflow_is_refused_on_every_rank(tmp_path, backend):
    """Rank 1's third batch gives a finite loss but a first-layer gradient near
    3e37, which lr = 10 turns into inf weights; before, the ranks applied the
    reduced update unchecked.  Now every rank refuses it, as one process does,
    naming the step, with nothing changed since step 2: the same on both (on
    numba, the reduced update is refused by the compiled call)."""
    ranks = run_case(tmp_path, "overflow", batch=4, n0=40, n1=40, optimizer="sgd10", backend=backend)
    for report, arrays in ranks:
        assert report["error_type"] == "FloatingPointError", report
        assert "step 3" in report["error"] and "layers[0] could overflow" in report["error"], report["error"]
        assert all(np.isfinite(p).all() for p in params_of(arrays))
        # on numba: step 2 by the compiled update, step 3 refused by it twice (the carried bounds, then
        # the exact ones); step 1, which makes the state, by the optimizer's kernels
        assert report["fused_apply_calls"] == (3 if backend == "numba" else 0), report["fused_apply_calls"]
    assert_replicas_identical(ranks)


@needs_mpi
def test_exception_on_one_rank_stops_all(tmp_path):
    ranks = run_case(tmp_path, "exception", batch=4, n0=40, n1=40)
    (r0, _), (r1, _) = ranks
    assert r1["error_type"] == "RuntimeError" and "injected" in r1["error"]
    assert r0["error_type"] == "DistributedError"
    assert "rank 1" in r0["error"] and "injected" in r0["error"] and "step 3" in r0["error"]
    assert_replicas_identical(ranks)
    net, _, _ = reference_sgd(np.float32, "numpy", 40, 40, 4, 1, steps=2)  # no update at step 3
    assert_close(params_of(ranks[0][1]), net.parameters(), np.float32, 2, 8)


@needs_mpi
def test_a_callback_stopping_on_one_rank_stops_every_rank(tmp_path):
    ranks = run_case(tmp_path, "callback_stop", batch=4, n0=40, n1=40, epochs=5)
    for report, _ in ranks:
        assert report["error"] is None and len(report["history"]["loss"]) == 2
    assert_replicas_identical(ranks)
    net, _, _ = reference_sgd(np.float32, "numpy", 40, 40, 4, 2)
    assert_close(params_of(ranks[0][1]), net.parameters(), np.float32, 20, 8)


@needs_mpi
def test_a_callback_raising_on_one_rank_fails_every_rank(tmp_path):
    ranks = run_case(tmp_path, "callback_raise", batch=4, n0=40, n1=40, epochs=5)
    (r0, _), (r1, _) = ranks
    assert r1["error_type"] == "RuntimeError" and "callback failed" in r1["error"]
    assert r0["error_type"] == "DistributedError" and "rank 1" in r0["error"]
    assert_replicas_identical(ranks)


@needs_mpi
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_wrong_state_a_callback_puts_in_place_on_one_rank_fails_every_rank(tmp_path, backend):
    """Rank 1's callback puts first-layer weights of a wrong shape in place after
    epoch 2: the check at epoch 3's start raises there and on rank 0, before
    either trains on; both hold the parameters of two epochs."""
    if backend == "numba":
        pytest.importorskip("numba")
    ranks = run_case(tmp_path, "callback_bad_state", batch=4, n0=40, n1=40, epochs=5, backend=backend)
    (r0, _), (r1, _) = ranks
    assert r1["error_type"] == "ValueError" and "layers[0].w must be" in r1["error"]
    assert r0["error_type"] == "DistributedError" and "rank 1" in r0["error"]
    assert_replicas_identical(ranks)
    net, _, _ = reference_sgd(np.float32, "numpy", 40, 40, 4, 2)
    assert_close(params_of(ranks[0][1]), net.parameters(), np.float32, 20, 8)


@needs_mpi
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_layer_callbacks_put_in_place_trains_on_its_own_reduced_gradients(tmp_path, backend):
    """Every rank's callback puts a new layers[1] in place after epoch 1: the
    next epochs reduce that layer's gradients (the reduction buffer bound to
    it again), as one process with the same replacement trains it."""
    if backend == "numba":
        pytest.importorskip("numba")
    ranks = run_case(tmp_path, "callback_new_layer", batch=4, n0=40, n1=40, epochs=3, backend=backend)
    for report, _ in ranks:
        assert report["error"] is None, report["error"]
    assert_replicas_identical(ranks)

    def replace(net, epoch):
        if epoch == 1:
            net.layers[1] = new_layer(net.dtype)

    net, _, _ = reference_sgd(np.float32, "numpy", 40, 40, 4, 3, after_epoch=replace)
    assert_close(params_of(ranks[0][1]), net.parameters(), np.float32, 30, 8)


@needs_mpi
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_layers_of_other_shapes_callbacks_put_in_place_are_refused_on_every_rank(tmp_path, backend):
    """Wider layers (and an optimizer for them) on every rank after epoch 1 pass
    the network's own check, but the reduction buffer was made for the old
    shapes: every rank refuses at epoch 2's start, naming them, before it
    trains on."""
    if backend == "numba":
        pytest.importorskip("numba")
    ranks = run_case(tmp_path, "callback_widen", batch=4, n0=40, n1=40, epochs=3, backend=backend)
    for report, _ in ranks:
        assert report["error_type"] == "ValueError", report
        assert "keep their shapes and dtype for the whole fit" in report["error"]
        assert "(16, 16)" in report["error"] and "(16, 20)" in report["error"]


@needs_mpi
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_changes_on_one_rank_alone_leave_the_replicas_and_their_bounds_identical(tmp_path, backend):
    """Rank 0's callback makes changes that are no part of the network (the
    change count is the process's): every rank still holds the same update
    bounds, so they refuse the same updates."""
    if backend == "numba":
        pytest.importorskip("numba")
    ranks = run_case(tmp_path, "callback_count", batch=4, n0=40, n1=40, epochs=3, backend=backend)
    for report, _ in ranks:
        assert report["error"] is None, report["error"]
    assert ranks[0][1]["bounds"].size  # compared by assert_replicas_identical
    assert_replicas_identical(ranks)


@needs_mpi
def test_bad_argument_on_one_rank_fails_on_every_rank_and_changes_nothing(tmp_path):
    ranks = run_case(tmp_path, "bad_rng")
    (r0, _), (r1, _) = ranks
    assert r1["error_type"] == "TypeError" and "rng" in r1["error"]
    assert r0["error_type"] == "DistributedError" and "rank 1" in r0["error"] and "rng" in r0["error"]
    assert_unchanged(ranks)


@needs_mpi
def test_evaluate_gives_global_means(tmp_path):
    ranks = run_case(tmp_path, "evaluate", dtype="float64", n0=30, n1=50)
    (X0, y0), (X1, y1) = shards(30, 50, np.float64)
    # rank 1's network has other weights and evaluate broadcasts nothing: evaluate
    # each rank's shard with its own network and weight by the shard sizes
    s0 = make_net(np.float64, "numpy", seed=0).evaluate(X0, y0)
    s1 = make_net(np.float64, "numpy", seed=1).evaluate(X1, y1)
    for report, _ in ranks:
        for key in ("loss", "accuracy"):
            np.testing.assert_allclose(report["scores"][key], (30 * s0[key] + 50 * s1[key]) / 80, rtol=1e-12)


@needs_mpi
def test_save_writes_on_rank_0_only(tmp_path):
    ranks = run_case(tmp_path, "save")
    assert [r["path"] for r, _ in ranks] == [str(tmp_path / "model.npz")] * 2
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["model.npz", "rank0.npz", "rank1.npz"]
    loaded = fn.NeuralNetwork.load(tmp_path / "model.npz")
    for a, b in zip(loaded.parameters(), params_of(ranks[0][1]), strict=True):
        assert np.array_equal(a, b)  # rank 0's weights


@needs_mpi
def test_failed_save_raises_on_every_rank(tmp_path):
    ranks = run_case(tmp_path, "save_fails")
    (r0, _), (r1, _) = ranks
    assert r0["error_type"] == "FileNotFoundError"
    assert r1["error_type"] == "DistributedError" and "rank 0" in r1["error"]


@needs_mpi
def test_readme_mpi_snippet_runs(tmp_path):
    """The README's MPI snippet, after the network and data of its API example."""
    pytest.importorskip("sklearn")
    readme = (HERE.parent / "README.md").read_text()
    api = re.search(r"## The API in one example\n\n```python\n(.*?)```", readme, re.S)[1]
    snippet = re.search(r"## Data-parallel training over MPI.*?```python\n(.*?)```", readme, re.S)[1]
    code = (api.split("history = net.fit(")[0] + snippet  # each rank writes a file: stdout interleaves
            + "\nopen(f'rank{comm.rank}.txt', 'w').write(f\"{scores['accuracy']} {len(history['loss'])}\")\n")
    (tmp_path / "snippet.py").write_text(code)
    mpiexec(["-m", "mpi4py", "snippet.py"], cwd=tmp_path)
    found = [(tmp_path / f"rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert found[0][1] == found[1][1] == "30"  # epochs
    assert found[0][0] == found[1][0] and float(found[0][0]) >= 0.95  # global: the same on both ranks
    assert (tmp_path / "digits.npz").exists()


@needs_mpi
def test_distributed_example_runs(tmp_path):
    stdout = mpiexec(["-m", "fastnet.examples.digits", "--distributed", "--epochs", "10", "--no-progress",
                      "--backend", "numpy"], cwd=tmp_path)
    lines = [ln for ln in stdout.splitlines() if ln.startswith("test accuracy")]
    assert len(lines) == 1, stdout  # printed by rank 0 only
    assert float(lines[0].split()[2].rstrip(";")) >= 0.95
    assert "2 ranks" in stdout


def test_comm_must_be_a_communicator():
    pytest.importorskip("mpi4py")
    net = make_net(np.float32, "numpy")
    X, y = shards(8, 8, np.float32)[0]
    before = [p.copy() for p in net.parameters()]
    with pytest.raises(TypeError, match="intracommunicator"):
        net.fit(X, y, comm="world", progress=False)
    with pytest.raises(TypeError, match="intracommunicator"):
        net.evaluate(X, y, comm=object())
    assert all(np.array_equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_without_mpi4py_a_clear_import_error(monkeypatch):
    """mpi4py is imported only when a communicator is given, and its absence says what to install."""
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    net = make_net(np.float32, "numpy")
    X, y = shards(8, 8, np.float32)[0]
    net.fit(X, y, progress=False)  # no communicator: no mpi4py needed
    before = [p.copy() for p in net.parameters()]
    with pytest.raises(ImportError, match=r"fastnet-dense\[mpi\]"):
        net.fit(X, y, progress=False, comm=object())
    assert all(np.array_equal(a, b) for a, b in zip(before, net.parameters(), strict=True))

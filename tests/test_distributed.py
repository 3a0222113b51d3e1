"""Data-parallel training under ``mpiexec -n 2`` (fastnet.distributed).

Each test runs tests/mpi_cases.py on two MPI processes in a subprocess with a
timeout (a deadlock fails the test instead of hanging it) and compares what
the ranks wrote with a single-process computation done here.  The tests skip,
with the reason, when mpi4py or mpiexec is missing; set FASTNET_REQUIRE_MPI=1
(CI does) to make that a failure instead.

Tolerances.  Two ranks compute the same global-batch mean gradient as one
process, but summed in another order: each rank's mean over b rows, scaled by
b / 2b, then added, against one mean over 2b rows.  Each gradient entry then
differs by a few roundings of its terms, at most about (2b + 2) * eps * S with
S the sum of the magnitudes of the terms; for b = 4 and |terms| <= |g|
that is ~10 eps |g|.  Through 20 steps of SGD with lr = 0.1 and momentum 0.9
(a step of up to lr / (1 - momentum) = 1 times the gradient) the parameters
can move apart by up to ~20 * 10 eps * max|g|, and max|g| is below 1 here:
we allow 200 eps * max(1, |p|), 2.4e-5 in float32 and 4.4e-14 in float64.
The worst seen over every case here was 1.7 eps (float32) and 1.5 eps
(float64): the dynamics did not amplify the roundings.
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
from mpi_cases import make_net, shards  # noqa: E402

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


def run_case(tmp_path, case, **opts):
    """Run one case on 2 ranks; returns the two ranks' (report, arrays)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    cmd = [MPIEXEC, "-n", "2", sys.executable, str(HERE / "mpi_cases.py"), case, str(tmp_path)]
    cmd += [f"{k}={v}" for k, v in opts.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, f"mpiexec failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    out = []
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        with np.load(tmp_path / f"rank{rank}.npz") as f:
            arrays = dict(f)
        out.append((report, arrays))
    return out


def params_of(arrays, prefix=""):
    return [arrays[f"{prefix}p{i}"] for i in range(sum(1 for k in arrays if k.startswith(prefix + "p")))]


def assert_close(got, want, dtype):
    tol = 200 * EPS[np.dtype(dtype)]
    for g, w in zip(got, want, strict=True):
        err = np.abs(g.astype(np.float64) - w) / np.maximum(1.0, np.abs(w))
        assert err.max() <= tol, f"max scaled difference {err.max():.3g} > {tol:.3g}"


def assert_replicas_identical(ranks):
    for a, b in zip(params_of(ranks[0][1]), params_of(ranks[1][1]), strict=True):
        assert np.array_equal(a, b), "the two replicas differ"


def reference_sgd(dtype, backend, n0, n1, batch, epochs):
    """One process: step s trains on rank 0's s-th batch followed by rank 1's."""
    (X0, y0), (X1, y1) = shards(n0, n1, dtype)
    net = make_net(dtype, backend, seed=0)
    steps = max(-(-n0 // batch), -(-n1 // batch))
    losses, accs = [], []
    for _ in range(epochs):
        loss_sum = correct = 0.0
        for s in range(steps):
            sl = slice(s * batch, (s + 1) * batch)
            xb, yb = np.concatenate([X0[sl], X1[sl]]), np.concatenate([y0[sl], y1[sl]])
            loss_sum += net.train_step(xb, yb, keep_grads=True) * len(yb)
            correct += np.sum(np.argmax(net.layers[-1].y, axis=1) == yb)  # outputs before the update
        losses.append(loss_sum / (n0 + n1))
        accs.append(correct / (n0 + n1))
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
        assert report["plan"] == "layered"
    assert not np.array_equal(ranks[0][1]["before_p0"], ranks[1][1]["before_p0"])
    assert_replicas_identical(ranks)

    (X0, y0), (X1, y1) = shards(b * steps, b * steps, dtype)
    X = np.concatenate([np.concatenate([X0[s * b:(s + 1) * b], X1[s * b:(s + 1) * b]]) for s in range(steps)])
    y = np.concatenate([np.concatenate([y0[s * b:(s + 1) * b], y1[s * b:(s + 1) * b]]) for s in range(steps)])
    net = make_net(dtype, "numpy", seed=0)
    history = net.fit(X, y, epochs=1, batch_size=2 * b, shuffle=False, progress=False)
    assert_close(params_of(ranks[0][1]), net.parameters(), dtype)
    # the layers' gradients are the last step's global means, as in one process
    grads = [[arrays[f"grad{i}"] for i in range(len(net.gradients()))] for _, arrays in ranks]
    assert_close(grads[0], net.gradients(), dtype)
    assert all(np.array_equal(a, b) for a, b in zip(*grads, strict=True))
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(ranks[0][0]["history"][key], history[key], rtol=1e-5)
        assert ranks[0][0]["history"][key] == ranks[1][0]["history"][key]


@needs_mpi
def test_numba_backend_agrees(tmp_path):
    """The JIT backend under MPI: same result as the NumPy single-process run
    (the JIT path agrees with the reference within float32 tolerance)."""
    ranks = run_case(tmp_path, "fit", backend="numba", batch=4, n0=80, n1=80, epochs=2)
    assert all(r["error"] is None for r, _ in ranks), ranks[0][0].get("traceback")
    assert_replicas_identical(ranks)
    net, losses, _ = reference_sgd(np.float32, "numpy", 80, 80, 4, 2)
    assert_close(params_of(ranks[0][1]), net.parameters(), np.float32)
    np.testing.assert_allclose(ranks[0][0]["history"]["loss"], losses, rtol=1e-5)


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
    assert_close(params_of(ranks[0][1]), net.parameters(), np.float64)
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
    assert_close(params_of(ranks[0][1]), net.parameters(), dtype)
    np.testing.assert_allclose(ranks[0][0]["history"]["loss"], history["loss"], rtol=1e-5)


@needs_mpi
@pytest.mark.parametrize("case", ["mismatch_sizes", "mismatch_dtype"])
def test_different_replicas_fail_on_every_rank(tmp_path, case):
    ranks = run_case(tmp_path, case)
    for report, arrays in ranks:
        assert report["error_type"] == "ValueError"
        assert "replicas differ" in report["error"]
        assert ("layer sizes" if case == "mismatch_sizes" else "dtype") in report["error"]
        for before, after in zip(params_of(arrays, "before_"), params_of(arrays), strict=True):
            assert np.array_equal(before, after)  # nothing was broadcast or trained


@needs_mpi
def test_bad_shard_fails_on_every_rank_and_changes_nothing(tmp_path):
    ranks = run_case(tmp_path, "bad_shard")
    (r0, a0), (r1, a1) = ranks
    assert r1["error_type"] == "ValueError" and "NaN" in r1["error"]  # its own error
    assert r0["error_type"] == "DistributedError" and "rank 1" in r0["error"] and "NaN" in r0["error"]
    for _, arrays in ranks:
        for before, after in zip(params_of(arrays, "before_"), params_of(arrays), strict=True):
            assert np.array_equal(before, after)


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
    (X0, y0), (X1, y1) = shards(40, 40, np.float32)
    eye = np.eye(5, dtype=np.float32)
    net = make_net(np.float32, "numpy", seed=0, loss="mse")
    for s in range(2):
        sl = slice(4 * s, 4 * s + 4)
        net.train_step(np.concatenate([X0[sl], X1[sl]]), eye[np.concatenate([y0[sl], y1[sl]])])
    assert_close(params_of(a0), net.parameters(), np.float32)


@needs_mpi
def test_exception_on_one_rank_stops_all(tmp_path):
    ranks = run_case(tmp_path, "exception", batch=4, n0=40, n1=40)
    (r0, _), (r1, _) = ranks
    assert r1["error_type"] == "RuntimeError" and "injected" in r1["error"]
    assert r0["error_type"] == "DistributedError"
    assert "rank 1" in r0["error"] and "injected" in r0["error"] and "step 3" in r0["error"]
    assert_replicas_identical(ranks)


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
    code = (api.split("history = net.fit(")[0] + snippet
            + "\nprint('RANK', comm.rank, 'ACCURACY', scores['accuracy'], len(history['loss']))\n")
    (tmp_path / "snippet.py").write_text(code)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py", "snippet.py"],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = sorted(re.findall(r"RANK (\d) ACCURACY ([\d.]+) 30", proc.stdout))
    assert [r for r, _ in found] == ["0", "1"], proc.stdout
    assert found[0][1] == found[1][1] and float(found[0][1]) >= 0.95  # global: the same on both ranks
    assert (tmp_path / "digits.npz").exists()


@needs_mpi
def test_distributed_example_runs(tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.run(
        [MPIEXEC, "-n", "2", sys.executable, "-m", "fastnet.examples.digits", "--distributed",
         "--epochs", "10", "--no-progress", "--backend", "numpy"],
        capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("test accuracy")]
    assert len(lines) == 1, proc.stdout  # printed by rank 0 only
    assert float(lines[0].split()[2].rstrip(";")) >= 0.95
    assert "2 ranks" in proc.stdout


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

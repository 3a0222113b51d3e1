"""The benchmark suites and the profiler run (as tests of function, never of speed)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastnet as fn
from fastnet import profiler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT, **kw)


# -- asv ----------------------------------------------------------------------------------------
asv = shutil.which("asv", path=os.path.dirname(sys.executable)) or shutil.which("asv")
needs_asv = pytest.mark.skipif(asv is None, reason="asv is not installed")


@needs_asv
def test_asv_check():
    _run([asv, "machine", "--yes"])
    proc = _run([asv, "check", "--python=same"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No problems found" in proc.stdout


@needs_asv
def test_asv_quick_run_covers_forward_and_backward_on_both_backends():
    _run([asv, "machine", "--yes"])
    # a small batch (compiled loops) and a large one (BLAS), relu: 8 of the 32 parameter
    # sets, each a process of its own (all 32 took 49 s of CI)
    proc = _run([asv, "run", "--python=same", "--quick", "--show-stderr",
                 "--bench", r"DenseLayer\.time_(forward|backward)\(.*, (1|256), 512, 'relu'"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for name in ("bench_dense.DenseLayer.time_forward", "bench_dense.DenseLayer.time_backward"):
        assert name in out, out
    assert "failed" not in out.lower(), out
    for backend in fn.available_backends():
        assert backend in out, out


# -- fastnet profile ---------------------------------------------------------------------------------
def test_profile_quick_writes_table_json_csv_png(tmp_path):
    proc = _run([sys.executable, "-m", "fastnet", "profile", "--quick", "--no-progress",
                 "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("profile.json", "profile.csv", "profile.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "profile.json").read_text())
    assert data["env"]["threadpools"], data["env"]
    backends = {r["backend"] for r in data["rows"]}
    assert backends == set(fn.available_backends())
    assert {r["batch"] for r in data["rows"]} == set(profiler.QUICK_BATCHES)
    for row in data["rows"]:
        assert row["us_min"] <= row["us_median"] <= row["us_max"]
        assert row["roofline"] > 0 and row["samples_per_s"] > 0
        if row["op"] == "train_step":
            parts = [row[f"phase_{p}_us"] for p in profiler.PHASES]
            assert min(parts) >= 0, row
            # "other" is the remainder, clipped at 0: the sum exceeds the step only by noise
            assert sum(parts) == pytest.approx(row["phases_over_step"] * row["us_median"])
            assert row["phases_over_step"] >= 1 - 1e-12, row  # how close to 1: a measurement
            # a fused step is one phase, the compiled call, and only a fused step has it
            assert (row["phase_fused_step_us"] > 0) == (row["plan"] == "fused"), row
            if row["plan"] == "fused":
                assert row["phase_fused_step_us"] + row["phase_other_us"] == pytest.approx(
                    sum(parts)), row
    assert any(r.get("plan") == "fused" for r in data["rows"]) == ("numba" in fn.available_backends())
    assert "knee" in proc.stdout and "GEMM peak" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--backends", "cuda"], "expected some of numpy, numba"),
    (["--batches", "0"], "expected positive integers"),
    (["--batches", "1,-4"], "expected positive integers"),
    (["--widths", "abc"], "expected positive integers"),
    (["--widths", "2.5"], "expected positive integers"),
    (["--dtypes", "float16"], "expected some of float32, float64"),
    (["--bogus"], "unrecognized arguments"),
])
def test_profile_bad_arguments_give_its_usage_and_one_error_line(args, message):
    proc = _run([sys.executable, "-m", "fastnet", "profile", *args])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("usage: fastnet profile ")
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fastnet profile: error: ") and message in last, proc.stderr


def _tiny_profile(**kw):
    return profiler.profile(widths=[16], batches=[4], repeats=1, target_seconds=1e-4,
                            progress=False, **kw)


def test_profile_peers_absent_are_skipped_with_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "jax", None)
    res = _tiny_profile(peers=True)
    assert "not installed" in res["peers"]["torch"]
    assert "not installed" in res["peers"]["jax"]
    assert {r["backend"] for r in res["rows"]} == set(fn.available_backends())


@pytest.mark.parametrize("peer", ["torch", "jax"])
def test_profile_peers_present_are_timed(peer):
    pytest.importorskip(peer)
    res = _tiny_profile(peers=True, backends=["numpy"])
    rows = [r for r in res["rows"] if r["backend"] == peer]
    assert {r["op"] for r in rows} == set(profiler.OPS)
    assert all(np.isfinite(r["us_median"]) for r in rows)


def test_knee_is_the_smallest_batch_within_ten_percent_of_the_best():
    assert profiler.knee({1: 10.0, 2: 89.0, 4: 91.0, 8: 100.0, 16: 95.0}) == 4
    assert profiler.knee({1: 5.0}) == 1
    assert profiler.knee({}) is None


# -- pytest-benchmark ------------------------------------------------------------------------------
_FAST_BENCH = ["-o", "addopts=", "--benchmark-only", "--benchmark-min-rounds=1", "--benchmark-max-time=0",
               "--benchmark-warmup=off", "-q", "-p", "no:cacheprovider"]


@pytest.fixture(scope="module")
def kernel_bench_json(tmp_path_factory):
    """One quick run of every kernel benchmark, grouped by two parameters at once."""
    out = tmp_path_factory.mktemp("bench") / "kernels.json"
    proc = _run([sys.executable, "-m", "pytest", "tests/test_bench_kernels.py", *_FAST_BENCH,
                 "--benchmark-group-by=param:variant,param:batch", f"--benchmark-json={out}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads(out.read_text())


def test_kernel_benchmarks_share_their_parameters_and_carry_flops(kernel_bench_json):
    _, data = kernel_bench_json
    assert data["benchmarks"]
    for bench in data["benchmarks"]:
        assert set(bench["params"]) == {"backend", "batch", "variant"}, bench["name"]
        info = bench["extra_info"]
        assert info["flops"] > 0 and info["batch"] == bench["params"]["batch"], bench["name"]
        # one group per kernel, variant and batch size: like with like
        batch = bench["params"]["batch"]
        assert bench["group"].endswith("" if batch is None else f" B={batch}"), bench["group"]
        assert f"[{bench['params']['variant']}]" in bench["group"]
    groups = {}
    for bench in data["benchmarks"]:
        groups.setdefault(bench["group"], set()).add(bench["params"]["backend"])
    assert all(len(backends) == len(fn.available_backends()) for backends in groups.values()), groups


@pytest.mark.parametrize("group_by", ["group", "param:batch", "param:backend", "param:variant",
                                      "group,param:batch", "fullname"])
def test_pytest_benchmark_compare_groups_by_any_parameter(kernel_bench_json, group_by):
    path, _ = kernel_bench_json
    tool = shutil.which("pytest-benchmark", path=os.path.dirname(sys.executable))
    proc = _run([tool, "compare", str(path), f"--group-by={group_by}"])
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_kernel_benchmark_json_holds_statistics_not_every_round(kernel_bench_json, tmp_path):
    _, data = kernel_bench_json
    for bench in data["benchmarks"]:
        assert "data" not in bench["stats"], "raw rounds saved: the JSON grows with every round"
        assert bench["stats"]["rounds"] >= 1 and bench["stats"]["median"] > 0
    out = tmp_path / "raw.json"  # unless asked for
    proc = _run([sys.executable, "-m", "pytest", "tests/test_bench_kernels.py", *_FAST_BENCH,
                 "-k", "optimizer_step", "--benchmark-keep-rounds", f"--benchmark-json={out}"])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert all("data" in b["stats"] for b in json.loads(out.read_text())["benchmarks"])


def test_every_benchmark_module_imports_with_fastnets_own_dependencies_only():
    """asv imports every module of benchmarks/ in environments holding only what
    fastnet needs (asv.conf.json): an import of scikit-learn, PyTorch, ... at the
    top of any of them fails asv's discovery for every benchmark."""
    names = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "benchmarks"))
                   if f.endswith(".py") and f != "__init__.py")
    code = ("import sys, importlib\n"
            "for blocked in ('sklearn', 'torch', 'jax', 'scipy', 'matplotlib', 'mpi4py', 'pytest'):\n"
            "    sys.modules[blocked] = None  # importing it now raises ImportError\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module('benchmarks.' + name)\n")
    proc = _run([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_latency_cases_run_and_the_floor_counts_each_pass():
    """benchmarks/latency.py's candidates run on this tree (they broke once unnoticed)
    and its floor is the forward reads, the input-gradient reads of all but the
    first layer, and one read-and-write update per layer."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import latency
    finally:
        sys.path.pop(0)
    assert latency.floor_seconds([1.0, 2.0, 4.0], [8.0, 16.0, 32.0]) == 1 + 2 + 4 + 2 + 4 + 8 + 16 + 32
    rng = np.random.default_rng(0)
    for batch in (1, 64):  # the tiles forced at a batch whose plan would take BLAS's products
        x = rng.normal(size=(batch, latency.SIZES[0])).astype(np.float32)
        y = rng.integers(0, latency.SIZES[-1], batch)
        cases = latency.fastnet_cases(x, y)
        for call in cases.values():
            call()
        if "numba" in fn.available_backends():
            assert "tiles (forced)" in cases
    reads, rws = latency.weight_passes()
    assert len(reads) == len(rws) == len(latency.SIZES) - 1 and min(reads + rws) > 0


@pytest.mark.skipif("numba" not in fn.available_backends() or shutil.which("git") is None
                    or not os.path.isdir(os.path.join(ROOT, ".git")), reason="needs numba and a git checkout")
def test_step_phases_patch_applies_and_counts_every_step(tmp_path):
    """benchmarks/step_phases.patch still applies to the committed fused step, and
    the patched step counts each of its calls (the script stops otherwise) and
    puts cycles in every phase of a momentum step by BLAS, with 1 and 2 threads."""
    proc = _run([sys.executable, "benchmarks/step_phases.py", "--sizes", "40-48-24-3", "--batch", "64",
                 "--rounds", "1", "--seconds", "0.02", "--threads", "1,2"],
                env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [row[0] for row in rows] == ["1", "2"], proc.stdout
    for row in rows:
        assert all(float(v) > 0 for v in row[1:]), row  # every phase, the sum, the step and the products

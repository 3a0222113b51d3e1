"""fastnet history: asv results recorded here by a quick asv run, drawn offline."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("asv")
pytest.importorskip("matplotlib")

from fastnet import history  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASV = shutil.which("asv", path=os.path.dirname(sys.executable)) or shutil.which("asv")
BENCH = r"DenseLayer\.time_train_step"


def _run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT, **kw)


def _commits(n):
    out = _run(["git", "rev-list", f"--max-count={n}", "HEAD"])
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    hashes = out.stdout.split()
    if len(hashes) < n:
        pytest.skip(f"fewer than {n} commits")
    return hashes


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """asv results of two commits (the installed package, --quick: a test, not a history)."""
    tmp = tmp_path_factory.mktemp("asv")
    with open(os.path.join(ROOT, "asv.conf.json")) as f:
        conf = json.load(f)
    conf.update(results_dir=str(tmp / "results"), html_dir=str(tmp / "html"), env_dir=str(tmp / "env"),
                repo=ROOT, benchmark_dir=os.path.join(ROOT, "benchmarks"))
    (tmp / "asv.conf.json").write_text(json.dumps(conf))
    _run([ASV, "machine", "--yes"])
    hashes = _commits(2)
    for commit in hashes:
        proc = _run([ASV, "run", "--config", str(tmp / "asv.conf.json"), "--python=same", "--quick",
                     "--set-commit-hash", commit, "--bench", BENCH + r"\(.*, (1|256), 512, 'relu'",
                     "--bench", r"MLP\.time_train_step\(.*, 64, 'sgd_momentum'"])
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp / "results", hashes


def test_load_reads_every_commit_and_parameter_set(recorded):
    results, hashes = recorded
    # the fixture's runs are --quick: one sample per timing, left out of a history by default
    (left,) = history.load(str(results)).values()
    assert left["series"] == {} and left["commits"] == [] and left["quick_left_out"] >= 2 * 2
    data = history.load(str(results), include_quick=True)
    assert len(data) == 1
    (machine, d), = data.items()
    assert {h for h, _ in d["commits"]} == set(hashes)
    series = d["series"]["bench_dense.DenseLayer.time_train_step"]
    combos = {combo for _, combo in series}
    backends = {c[0].strip("'") for c in combos}
    assert {c[1] for c in combos} == {"1", "256"} and backends <= {"numpy", "numba"}
    for points in series.values():
        assert set(points) == {0, 1} and all(v > 0 for v, _ in points.values())


def test_history_writes_pngs_and_an_offline_index(recorded, tmp_path):
    results, hashes = recorded
    proc = _run([sys.executable, "-m", "fastnet", "history", "--results", str(results),
                 "--out", str(tmp_path / "out"), "--include-quick"])
    assert proc.returncode == 0, proc.stderr
    index = (tmp_path / "out" / "index.html").read_text()
    assert not re.search(r"(src|href)=\"?(https?:)?//", index)  # nothing from the internet
    images = re.findall(r'<img src="([^"]+)"', index)
    assert any("time_train_step" in name for name in images)
    for name in images:
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for h in hashes:
        assert h[:8] in index
    # the MLP's train step (its parameters give the layer sizes) is drawn as GFLOP/s too
    assert any(name.endswith("MLP.time_train_step-gflops.png") for name in images), images


def test_history_of_a_missing_folder_is_one_line_and_status_1(tmp_path):
    proc = _run([sys.executable, "-m", "fastnet", "history", "--results", str(tmp_path / "none")])
    assert proc.returncode == 1
    assert proc.stderr.startswith("fastnet history: error: FileNotFoundError: no asv results folder")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("values, expected", [
    ([1.0] * 4 + [2.0] * 4, [(4, 1.0)]),        # a step up in time: a regression at its first commit
    ([2.0] * 4 + [1.0] * 4, []),                # faster: none
    ([1.0, 1.01, 0.99, 1.0, 1.02, 1.0], []),    # noise below asv's 5%
    ([1.0, None, 1.0, 1.0, 3.0, 3.0, 3.0], [(4, 2.0)]),  # a missing commit is skipped
])
def test_regressions_are_asvs(values, expected):
    got = history.regressions(values)
    assert [a for a, _ in got] == [a for a, _ in expected]
    for (_, size), (_, want) in zip(got, expected, strict=True):
        assert size == pytest.approx(want, rel=1e-6)


def test_flags_are_those_of_asvs_own_report(recorded, tmp_path):
    """The regressions drawn are the ones asv's own report lists (asv publish's
    regressions.json, made offline), series by series."""
    results, _ = recorded
    conf = json.loads((results.parent / "asv.conf.json").read_text())
    conf["html_dir"] = str(tmp_path / "html")
    (tmp_path / "asv.conf.json").write_text(json.dumps(conf))
    proc = _run([ASV, "publish", "--config", str(tmp_path / "asv.conf.json")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    listed = {r[0]: len(r[6]) for r in json.loads((tmp_path / "html" / "regressions.json").read_text())[
        "regressions"]}
    (d,) = history.load(str(results), include_quick=True).values()
    n = len(d["commits"])
    for bench, by in d["series"].items():
        for (_, combo), points in by.items():
            values = [points[i][0] if i in points else None for i in range(n)]
            weights = [points[i][1] if i in points else None for i in range(n)]
            name = f"{bench}({', '.join(combo)})"
            assert len(history.regressions(values, weights)) == listed.get(name, 0), name


def test_train_step_flops_counts_the_products():
    # 784-256-256-10 at B = 2: forward and dw per layer, dx for the two upper layers
    products = [784 * 256, 256 * 256, 256 * 10]
    want = 2 * 2 * (2 * sum(products) + products[1] + products[2])
    assert history.train_step_flops(2, "784-256-256-10") == want

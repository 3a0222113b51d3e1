"""A cold first step's leaves compiled by a helper process while this one
compiles the step, then the leaves from the other end
(``fastnet.kernels.numba.aside``): the helper started only when the cache
lacks the step and a core is spare, in a cold process before the step's
checks compile anything; the leaves it cached loaded here; killed when this
process has what it needs, when the first step fails (its batch refused
included) or when it is slow; a failed one reported, its leaves compiled
here.  The blocks' own rules (a block inside another of the same dtype, a
cold process) are tested in this process at the end, with no helper started,
and last, that a helper imports this fastnet whatever the working folder holds.

Each case runs in a new process with an empty ``NUMBA_CACHE_DIR`` of its own
(cold, as a user's first step is), records the kernels that process compiled
(numba's compile events) and the helpers it started, and prints the weights
after its steps.  The results are compared exactly: every run compiles the
same code for the same CPU, whichever process compiles it.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")
from numba.core import config as numba_config  # noqa: E402

from fastnet.kernels.numba.aside import usable_cores  # noqa: E402

pytestmark = pytest.mark.skipif(numba_config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT: nothing is compiled")
two_cores = pytest.mark.skipif(usable_cores() < 2, reason="a helper starts only with a core to spare")

CASE = """
import json, subprocess, sys, warnings
import numpy as np
import fastnet as fn
from numba.core import event

compiled, started, at_start = [], [], []

class Compiles(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__name__)

    def on_end(self, ev):
        pass

# before fastnet's own listener: a helper started at a compile comes after that compile's record
event.register("numba:compile", Compiles())
from fastnet.kernels.numba import aside
real_start = aside.start_helper

def start(argv):
    started.append([str(a) for a in argv])
    at_start.append(len(compiled))
    started_helpers.append(real_start(argv) if START is None else subprocess.Popen(
        [sys.executable, "-c", START, *argv], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE))
    return started_helpers[-1]

started_helpers = []
aside.start_helper = start
START = {start!r}
if {one_thread!r}:
    fn.set_num_threads(1)
layers = [fn.DenseLayer({activation!r}, 20, neurons_num=16, rng=0),
          fn.DenseLayer("identity", neurons_num=3, rng=1)]
net = fn.NeuralNetwork(layers, "softmax_xent", {optimizer}, backend="numba")
rng = np.random.default_rng(0)
x, y = rng.normal(size=(40, 20)).astype(np.float32), rng.integers(0, 3, 40)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    {run}
print(json.dumps({{"compiled": compiled, "started": started, "at_start": at_start,
                  "weights": [la.w.tolist() for la in net.layers],
                  "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning],
                  "helpers": [h.poll() for h in started_helpers]}}))
"""
STEP = "net.train_step(x[:5], y[:5]); net.train_step(x[5:10], y[5:10])"
FIT = "net.fit(x, y, epochs=2, batch_size=8, shuffle=False, progress=False)"
BY_BLAS = "net.train_step(x[:32], y[:32])"  # past the tiles' 20 rows: the step by BLAS
# fewer rows than the batch size: fit's block guesses the step by BLAS, and the step takes the tiles
SHORT_FIT = "net.fit(x[:16], y[:16], epochs=1, batch_size=32, shuffle=False, progress=False)"
HELPER = ["--leaves", "float32"]
# the names of the leaves offered to the helper, appended to ``compiled`` after the run
SHARED = """
    real_share, shared = aside.Aside.share, []
    def share(self, leaves):
        shared.extend(kernel.__name__ for kernel, _ in leaves)
        real_share(self, leaves)
    aside.Aside.share = share
    {run}
    compiled.append(shared)
"""


def _case(cache, optimizer="fn.SGD(0.1)", run=STEP, one_thread=False, start=None, activation="relu"):
    code = CASE.format(optimizer=optimizer, run=run, one_thread=one_thread, start=start,
                       activation=activation)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _shared_case(cache, run=STEP, **kwargs):
    """``_case`` of ``run``, and the leaves offered to its helper (in order)."""
    out = _case(cache, run=SHARED.format(run=run).strip(), **kwargs)
    *out["compiled"], shared = out["compiled"]
    return out, shared


@two_cores
@pytest.mark.parametrize("optimizer, run, step, warm_too", [
    ("fn.SGD(0.1)", STEP, "compiled_step_sgd_tiles", True),
    ("fn.Adam(0.01)", STEP, "compiled_step_adam_tiles", False),
    ("fn.SGD(0.1, momentum=0.9)", FIT, "compiled_step_sgd_tiles", False),
    ("fn.SGD(0.1)", BY_BLAS, "compiled_step_sgd_blas", False),
    ("fn.SGD(0.1)", SHORT_FIT, "compiled_step_sgd_tiles", False),
])
def test_a_cold_first_step_shares_its_leaves_with_a_helper(tmp_path, optimizer, run, step, warm_too):
    aside, shared = _shared_case(tmp_path / "aside", run, optimizer=optimizer)
    assert aside["started"] == [HELPER]  # one helper, whichever step the first block guessed
    # started as the step began (training.compiling_ahead), before its checks compiled anything
    assert aside["at_start"] == [0], aside["compiled"]
    # done (0), or killed once this process had every leaf (-9); nothing failed
    assert aside["helpers"] in ([0], [-9]) and aside["warnings"] == []
    assert step in aside["compiled"] and len(shared) >= 6, shared
    # one thread: no helper, every kernel compiled in this process
    here = _case(tmp_path / "here", optimizer, run, one_thread=True)
    assert here["started"] == [] and step in here["compiled"] and set(shared) <= set(here["compiled"])
    assert aside["weights"] == here["weights"]
    if not warm_too:  # the cache's cases below do not depend on the optimizer: one of them suffices
        return
    # a warm cache: nothing compiles, so no helper starts
    warm = _case(tmp_path / "aside", optimizer, run)
    assert warm["started"] == [] and warm["compiled"] == [] and warm["weights"] == here["weights"]
    # a new activation: its leaves compile here, but the step is in the cache, so no helper starts
    other = _case(tmp_path / "aside", optimizer, run, activation="tanh")
    assert other["compiled"] and step not in other["compiled"] and other["started"] == []


# a helper slowed before each leaf it looks at (1 s, against about 0.2 s to compile one)
SLOW_LEAVES = ("import sys, time; from fastnet.kernels.numba import aside, warm; real = aside.have; "
               "aside.have = lambda kernel, args: time.sleep(1) or real(kernel, args); "
               "warm.main(sys.argv[1:])")


@two_cores
def test_the_helper_takes_the_leaves_from_the_first_and_this_process_from_the_last(tmp_path):
    # the helper has the first leaf cached about 1.2 s after it is offered; this process
    # reaches it after the step (about 2 s) and the other leaves, so it loads it; and it
    # compiles the last leaf itself long before the helper could get there
    out, shared = _shared_case(tmp_path / "shared", start=SLOW_LEAVES)
    assert out["started"] == [HELPER] and len(shared) >= 6, shared
    assert shared[0] not in out["compiled"], out["compiled"]  # the helper's, loaded here
    assert shared[-1] in out["compiled"] and "compiled_step_sgd_tiles" in out["compiled"], out["compiled"]
    # killed where the two met (or ended just before, finding this process's leaf cached)
    assert out["helpers"] in ([-9], [0]) and out["warnings"] == []
    assert out["weights"] == _case(tmp_path / "here", one_thread=True)["weights"]


@two_cores
def test_a_slow_helper_is_not_waited_for(tmp_path):
    # a helper that starts compiling only after this process has compiled everything: it is killed
    slow = ("import runpy, sys, time; time.sleep(30); sys.argv[0] = 'warm'; "
            "runpy.run_module('fastnet.kernels.numba.warm', run_name='__main__')")
    out, shared = _shared_case(tmp_path / "slow", start=slow)
    assert out["started"] == [HELPER] and out["helpers"] == [-9] and out["warnings"] == []
    assert set(shared) <= set(out["compiled"]) and "compiled_step_sgd_tiles" in out["compiled"]
    assert out["weights"] == _case(tmp_path / "here", one_thread=True)["weights"]


@two_cores
def test_a_failed_helper_is_reported_and_its_leaves_compile_here(tmp_path):
    failed, shared = _shared_case(tmp_path / "failed",
                                  start="import sys; sys.stderr.write('no compiler here'); sys.exit(3)")
    assert failed["started"] == [HELPER]
    assert len(failed["warnings"]) == 1
    assert "exit 3" in failed["warnings"][0] and "no compiler here" in failed["warnings"][0]
    assert set(shared) <= set(failed["compiled"]) and "compiled_step_sgd_tiles" in failed["compiled"]
    assert failed["weights"] == _case(tmp_path / "here", one_thread=True)["weights"]


@two_cores
@pytest.mark.parametrize("run", [
    "net.train_step(x[:5], np.full(5, 7))",
    "net.fit(x, np.full(40, 7), epochs=1, batch_size=8, progress=False)",
], ids=["train_step", "fit"])
def test_a_refused_first_batch_kills_the_helper_started_for_it(tmp_path, run):
    # labels out of range: refused by the checks, before the step's kernels are reached
    out = _case(tmp_path, run=f"try:\n        {run}\n    except ValueError:\n        pass")
    assert out["started"] == [HELPER] and out["at_start"] == [0]
    assert out["helpers"] == [-9]
    assert out["weights"] == _case(tmp_path / "none", run="pass")["weights"]


@two_cores
def test_a_first_step_that_raises_kills_its_helper(tmp_path):
    # the step is interrupted as its leaves are offered to the helper: the helper,
    # just given them, must not outlive it
    run = """
    real_share = aside.Aside.share
    def interrupted(self, leaves):
        real_share(self, leaves)
        raise KeyboardInterrupt
    aside.Aside.share = interrupted
    try:
        net.train_step(x[:5], y[:5])
    except KeyboardInterrupt:
        pass
"""
    out = _case(tmp_path, run=run.strip())
    assert out["started"] == [HELPER]
    assert out["helpers"] == [-9]  # killed (SIGKILL), not left running (None) or finished (0)
    # the interrupted step changed nothing: the weights are the initial ones
    assert out["weights"] == _case(tmp_path / "none", run="pass")["weights"]


# -- the blocks themselves, in this process: a helper that is not started, compiles that are not run ---------
class _Pipe:
    def __init__(self):
        self.written = b""

    def write(self, data):
        self.written += data

    def flush(self):
        pass


class _Helper:
    """What ``Aside`` does with a helper process (``subprocess.Popen``), recorded."""

    def __init__(self, argv):
        self.argv, self.done, self.returncode, self.stdin = argv, [], None, _Pipe()

    def poll(self):
        return self.returncode

    def kill(self):
        self.done.append("killed")
        self.returncode = -9

    def communicate(self, timeout=None):
        self.done.append("reaped")
        return b"", b"what it wrote"


class _Kernel:
    def __init__(self, name):
        self.__name__, self.overloads = name, {}


@pytest.fixture
def blocks(monkeypatch):
    """(Aside, the helpers started, the names of the kernels in the cache): no
    process is started, and a core is spare."""
    from fastnet.kernels.numba import aside, cpu

    helpers, cached = [], set()
    monkeypatch.setattr(aside, "start_helper", lambda argv: helpers.append(_Helper(argv)) or helpers[-1])
    monkeypatch.setattr(aside, "spare_core", lambda: True)
    monkeypatch.setattr(cpu, "cached", lambda kernel, args: kernel.__name__ in cached)
    return aside.Aside, helpers, cached


STEP_K, CHECK_K, LEAF_A, LEAF_B = _Kernel("step"), _Kernel("check"), _Kernel("leaf_a"), _Kernel("leaf_b")


def test_a_cold_process_starts_the_helper_as_the_block_opens_and_shares_with_it(blocks):
    Aside, helpers, cached = blocks
    with Aside("float32", [(STEP_K, ())], cold=[(CHECK_K, ())]) as block:
        assert [h.argv for h in helpers] == [["--leaves", "float32"]]  # the checks' kernel is nowhere
        block.share([(LEAF_A, ()), (LEAF_B, ())])
        block.share([(LEAF_B, ())])  # once per helper: the first list stands
        assert helpers[0].stdin.written == b"leaf_a leaf_b\n" and helpers[0].done == []
    assert helpers[0].done == ["killed", "reaped"]  # still running as the block ended


def test_a_process_whose_checks_are_cached_starts_the_helper_when_it_shares_a_leaf_the_cache_lacks(blocks):
    Aside, helpers, cached = blocks
    cached.update({"check", "leaf_a"})
    with Aside("float32", [(STEP_K, ())], cold=[(CHECK_K, ())]) as block:
        assert helpers == []
        block.share([(LEAF_A, ())])  # in the cache: no helper for it
        assert helpers == []
        block.share([(LEAF_A, ()), (LEAF_B, ())])
        assert len(helpers) == 1 and helpers[0].stdin.written == b"leaf_a leaf_b\n"
    cached.add("step")  # the step itself cached: no helper, cold or not
    with Aside("float32", [(STEP_K, ())], cold=[(_Kernel("other"), ())]) as block:
        block.share([(_Kernel("leaf_c"), ())])
    assert len(helpers) == 1


def test_an_inner_block_of_the_same_kernels_shares_with_and_ends_the_outer_blocks_helper(blocks):
    Aside, helpers, cached = blocks
    with Aside("float32", [(STEP_K, ())], cold=[(CHECK_K, ())]):
        with Aside("float32", [(STEP_K, ())]) as inner:  # starts nothing of its own
            inner.share([(LEAF_A, ())])
            assert len(helpers) == 1 and helpers[0].stdin.written == b"leaf_a\n"
        assert helpers[0].done == ["killed", "reaped"]  # leaving the inner block ended it
    assert len(helpers) == 1 and helpers[0].done == ["killed", "reaped"]


def test_a_failed_block_kills_its_helper(blocks):
    Aside, helpers, cached = blocks
    with pytest.raises(ValueError), Aside("float32", [(STEP_K, ())], cold=[(CHECK_K, ())]):
        with Aside("float32", [(STEP_K, ())]):
            raise ValueError("a refused batch")
    assert helpers[0].done == ["killed", "reaped"]


def test_finish_reports_a_helper_that_failed_and_not_one_that_finished(blocks):
    Aside, helpers, cached = blocks
    with Aside("float32", [(STEP_K, ())], cold=[(CHECK_K, ())]) as block:
        helpers[0].returncode = 0  # it compiled every leaf it was given
        block.finish()
    assert helpers[0].done == ["reaped"]
    with pytest.warns(RuntimeWarning, match="exit 3.*what it wrote"):
        with Aside("float32", [(STEP_K, ())], cold=[(CHECK_K, ())]) as block:
            helpers[1].returncode = 3
            block.finish()
    assert helpers[1].done == ["reaped"]


def test_blocks_of_other_dtypes_start_their_own_and_of_other_kernels_share_one(blocks):
    Aside, helpers, cached = blocks
    with Aside("float32", [(STEP_K, ())], cold=[(CHECK_K, ())]):
        with Aside("float64", [(STEP_K, ())], cold=[(CHECK_K, ())]), \
                Aside("float32", [(_Kernel("other"), ())], cold=[(CHECK_K, ())]) as other:
            other.share([(LEAF_A, ())])  # another step of the same dtype: the outer block's helper
        assert sorted(h.argv[1] for h in helpers) == ["float32", "float64"]
        assert [h.stdin.written for h in helpers if h.argv[1] == "float32"] == [b"leaf_a\n"]
    assert all(h.done == ["killed", "reaped"] for h in helpers)


def test_the_helper_compiles_shared_leaves_until_it_meets_a_cached_one(monkeypatch):
    from fastnet.kernels.numba import aside, warm

    done = []

    class Leaf(_Kernel):
        def compile(self, args):
            done.append(self.__name__)

    class Signature:
        args = ()

    leaves = (Leaf("one"), Leaf("two"), Leaf("three"), Leaf("four"))
    monkeypatch.setattr(warm.fused, "LEAVES", type("L", (), {"entries": [(leaves, lambda dt: Signature)]}))
    monkeypatch.setattr(aside, "have", lambda kernel, args: kernel.__name__ == "two")
    warm.compile_until_met("float32", ["four", "three", "two", "one"])
    assert done == ["four", "three"]


def test_a_helper_imports_this_fastnet_whatever_the_working_directory_holds(tmp_path, monkeypatch):
    # ``python -m`` would put the working directory first: a checkout of another
    # version there would be the fastnet the helper ran
    from fastnet.kernels.numba import aside

    (tmp_path / "fastnet").mkdir()
    (tmp_path / "fastnet" / "__init__.py").write_text("raise SystemExit('the wrong fastnet')\n")
    monkeypatch.chdir(tmp_path)
    helper = aside.start_helper(["--leaves", "float32"])
    _, err = helper.communicate(input=b"\n", timeout=300)  # no leaves: it sets up and ends
    assert helper.returncode == 0, err.decode()[-2000:]

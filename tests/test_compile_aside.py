"""The fused step compiled in a helper process while the first step compiles its
leaves (``fastnet.kernels.numba.aside``): started only when the cache lacks the
step and a core is spare, in a cold process before the step's checks compile
anything, waited for before the step runs, killed when the first step fails
(its batch refused included), and replaced by a compile here when the helper
fails.  The blocks' own rules (a block inside another of the same kernels, a
cold process) are tested in this process at the end, with no helper started.

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
        [sys.executable, "-c", START, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
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


def _case(cache, optimizer="fn.SGD(0.1)", run=STEP, one_thread=False, start=None, activation="relu"):
    code = CASE.format(optimizer=optimizer, run=run, one_thread=one_thread, start=start,
                       activation=activation)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@two_cores
@pytest.mark.parametrize("optimizer, run, step, warm_too", [
    ("fn.SGD(0.1)", STEP, "compiled_step_sgd", True),
    ("fn.Adam(0.01)", STEP, "compiled_step_adam", False),
    ("fn.SGD(0.1, momentum=0.9)", FIT, "compiled_step_sgd", False),
])
def test_a_cold_first_step_compiles_the_step_in_a_helper_with_the_same_result(tmp_path, optimizer, run, step,
                                                                               warm_too):
    aside = _case(tmp_path / "aside", optimizer, run)
    assert aside["started"] == [["--only", "float32", step]]
    # started as the step began (training.compiling_ahead), before its checks compiled anything
    assert aside["at_start"] == [0], aside["compiled"]
    assert aside["helpers"] == [0] and aside["warnings"] == []
    # loaded from the cache the helper filled, not compiled here
    assert step not in aside["compiled"], aside["compiled"]
    # one thread: no helper, every kernel compiled in this process
    here = _case(tmp_path / "here", optimizer, run, one_thread=True)
    assert here["started"] == [] and step in here["compiled"]
    assert aside["weights"] == here["weights"]
    if not warm_too:  # the cache's cases below do not depend on the optimizer: one of them suffices
        return
    # a warm cache: nothing compiles, so no helper starts
    warm = _case(tmp_path / "aside", optimizer, run)
    assert warm["started"] == [] and warm["compiled"] == [] and warm["weights"] == here["weights"]
    # a new activation: its leaves compile here, but the step is in the cache, so no helper starts
    other = _case(tmp_path / "aside", optimizer, run, activation="tanh")
    assert other["compiled"] and step not in other["compiled"] and other["started"] == []


@two_cores
def test_a_slow_helper_is_waited_for(tmp_path):
    # a helper that starts compiling only after this process has compiled the
    # leaves and would call the step: the call must wait and load the step
    slow = ("import runpy, sys, time; time.sleep(8); sys.argv[0] = 'warm'; "
            "runpy.run_module('fastnet.kernels.numba.warm', run_name='__main__')")
    out = _case(tmp_path / "slow", start=slow)
    assert out["started"] == [["--only", "float32", "compiled_step_sgd"]] and out["helpers"] == [0]
    assert "compiled_step_sgd" not in out["compiled"], out["compiled"]
    assert out["weights"] == _case(tmp_path / "here", one_thread=True)["weights"]


@two_cores
def test_a_failed_helper_is_reported_and_the_step_compiles_here(tmp_path):
    failed = _case(tmp_path / "failed", start="import sys; sys.stderr.write('no compiler here'); sys.exit(3)")
    assert failed["started"] == [["--only", "float32", "compiled_step_sgd"]]
    assert len(failed["warnings"]) == 1
    assert "exit 3" in failed["warnings"][0] and "no compiler here" in failed["warnings"][0]
    assert "compiled_step_sgd" in failed["compiled"]
    assert failed["weights"] == _case(tmp_path / "here", one_thread=True)["weights"]


@two_cores
@pytest.mark.parametrize("run", [
    "net.train_step(x[:5], np.full(5, 7))",
    "net.fit(x, np.full(40, 7), epochs=1, batch_size=8, progress=False)",
], ids=["train_step", "fit"])
def test_a_refused_first_batch_kills_the_helper_started_for_it(tmp_path, run):
    # labels out of range: refused by the checks, before the step and its wait are reached
    out = _case(tmp_path, run=f"try:\n        {run}\n    except ValueError:\n        pass")
    assert out["started"] == [["--only", "float32", "compiled_step_sgd"]] and out["at_start"] == [0]
    assert out["helpers"] == [-9]
    assert out["weights"] == _case(tmp_path / "none", run="pass")["weights"]


@two_cores
def test_a_first_step_that_raises_kills_its_helper(tmp_path):
    # the step's first leaf compiles (the helper starts at that compile), then the
    # step is interrupted before its next: the helper, still compiling the step,
    # must not outlive it
    run = """
    from fastnet.kernels.numba import fused
    real_need = fused.LEAVES.need
    def interrupted(*args):
        real_need(*args)
        raise KeyboardInterrupt
    fused.LEAVES.need = interrupted
    try:
        net.train_step(x[:5], y[:5])
    except KeyboardInterrupt:
        pass
"""
    out = _case(tmp_path, run=run.strip())
    assert out["started"] == [["--only", "float32", "compiled_step_sgd"]]
    assert out["helpers"] == [-9]  # killed (SIGKILL), not left running (None) or finished (0)
    # the interrupted step changed nothing: the weights are the initial ones
    assert out["weights"] == _case(tmp_path / "none", run="pass")["weights"]


# -- the blocks themselves, in this process: a helper that is not started, compiles that are not run ---------
class _Helper:
    """What ``Aside`` does with a helper process (``subprocess.Popen``), recorded."""

    def __init__(self, argv):
        self.argv, self.done, self.returncode = argv, [], None

    def kill(self):
        self.done.append("killed")
        self.returncode = -9

    def communicate(self, timeout=None):
        self.done.append("waited" if self.returncode is None else "reaped")
        self.returncode = 0 if self.returncode is None else self.returncode
        return b"", b""


class _Kernel:
    def __init__(self, name):
        self.__name__, self.overloads = name, {}


@pytest.fixture
def blocks(monkeypatch):
    """(Aside, the helpers started, a function that starts a compile, the names of
    the kernels in the cache): no process is started, and a core is spare."""
    from fastnet.kernels.numba import aside, cpu

    helpers, watching, cached = [], [], set()

    def on_compile(callback):
        watching.append(callback)
        return lambda: watching.remove(callback) if callback in watching else None

    monkeypatch.setattr(aside, "start_helper", lambda argv: helpers.append(_Helper(argv)) or helpers[-1])
    monkeypatch.setattr(aside, "spare_core", lambda: True)
    monkeypatch.setattr(cpu, "on_compile", on_compile)
    monkeypatch.setattr(cpu, "cached", lambda kernel, args: kernel.__name__ in cached)

    def compile_starts():
        for callback in list(watching):
            callback(True)
    return aside.Aside, helpers, compile_starts, cached


STEP_K, CHECK_K = _Kernel("step"), _Kernel("check")


def test_an_inner_block_of_the_same_kernels_waits_for_the_outer_blocks_helper(blocks):
    Aside, helpers, compile_starts, cached = blocks
    with Aside("float32", [(STEP_K, ())]):
        with Aside("float32", [(STEP_K, ())]):
            compile_starts()  # the first compile, inside the inner block: one helper, the outer's
            compile_starts()
            assert [h.argv for h in helpers] == [["--only", "float32", "step"]] and helpers[0].done == []
        assert helpers[0].done == ["waited"]  # leaving the inner block waited for it
        compile_starts()  # the step is ready: no helper after that
    assert len(helpers) == 1 and helpers[0].done == ["waited"]


def test_an_outer_block_started_before_the_inner_one_opens(blocks):
    Aside, helpers, compile_starts, cached = blocks
    with Aside("float64", [(STEP_K, ())]):
        compile_starts()  # the checks compile: the helper starts here
        assert len(helpers) == 1
        with Aside("float64", [(STEP_K, ())]):
            compile_starts()
        assert len(helpers) == 1 and helpers[0].done == ["waited"]


def test_a_failed_inner_block_leaves_the_helper_to_the_outer_which_kills_it(blocks):
    Aside, helpers, compile_starts, cached = blocks
    with pytest.raises(ValueError), Aside("float32", [(STEP_K, ())]):
        with Aside("float32", [(STEP_K, ())]):
            compile_starts()
            raise ValueError("a refused batch")
    assert helpers[0].done == ["killed", "reaped"]


def test_an_outer_block_that_fails_before_the_inner_one_kills_its_helper(blocks):
    Aside, helpers, compile_starts, cached = blocks
    with pytest.raises(ValueError), Aside("float32", [(STEP_K, ())]):
        compile_starts()
        raise ValueError("a refused batch")
    assert helpers[0].done == ["killed", "reaped"]


def test_blocks_of_other_kernels_or_dtypes_each_start_their_own(blocks):
    Aside, helpers, compile_starts, cached = blocks
    with Aside("float32", [(STEP_K, ())]):
        with Aside("float64", [(STEP_K, ())]), Aside("float32", [(CHECK_K, ())]):
            compile_starts()
    assert sorted(h.argv[1:] for h in helpers) == [["float32", "check"], ["float32", "step"],
                                                   ["float64", "step"]]
    assert all(h.done == ["waited"] for h in helpers)


def test_a_cold_process_starts_the_helper_as_the_block_opens(blocks):
    Aside, helpers, compile_starts, cached = blocks
    with Aside("float32", [(STEP_K, ())], cold=[(CHECK_K, ())]):
        assert len(helpers) == 1  # the checks' kernel is nowhere: the process is cold
        compile_starts()
    assert len(helpers) == 1 and helpers[0].done == ["waited"]


def test_a_process_whose_checks_are_cached_waits_for_a_compile(blocks):
    # the checks' kernel in the cache: perhaps nothing else compiles in the block, and a
    # helper then only costs its start; it starts at the block's first compile, if any
    Aside, helpers, compile_starts, cached = blocks
    cached.add("check")
    with Aside("float32", [(STEP_K, ())], cold=[(CHECK_K, ())]):
        assert helpers == []
    assert helpers == []
    with Aside("float32", [(STEP_K, ())], cold=[(CHECK_K, ())]):
        compile_starts()
        assert len(helpers) == 1
    cached.add("step")  # the step itself cached: nothing to start, cold or not
    with Aside("float32", [(STEP_K, ())], cold=[(_Kernel("other"), ())]):
        compile_starts()
    assert len(helpers) == 1

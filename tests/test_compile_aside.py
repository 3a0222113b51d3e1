"""The fused step compiled in a helper process while the first step compiles its
leaves (``fastnet.kernels.numba.aside``): started only when the cache lacks the
step and a core is spare, waited for before the step runs, killed when the
first step fails, and replaced by a compile here when the helper fails.

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
from fastnet.kernels.numba import aside

compiled, started = [], []

class Compiles(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__name__)

    def on_end(self, ev):
        pass

event.register("numba:compile", Compiles())
real_start = aside.start_helper

def start(argv):
    started.append([str(a) for a in argv])
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
print(json.dumps({{"compiled": compiled, "started": started, "weights": [la.w.tolist() for la in net.layers],
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
    # fit's first step is train_step's, before its compiled epochs
    ("fn.SGD(0.1, momentum=0.9)", FIT, "compiled_step_sgd", False),
])
def test_a_cold_first_step_compiles_the_step_in_a_helper_with_the_same_result(tmp_path, optimizer, run, step,
                                                                               warm_too):
    aside = _case(tmp_path / "aside", optimizer, run)
    assert aside["started"] == [["--only", "float32", step]]
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

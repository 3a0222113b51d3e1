"""What the JIT kernels compile, and when: nothing again for a network of
another depth or for read-only inputs, one dtype unless asked for both, again
when a kernel source changes, a cache beside a regular install, and NumPy with
one warning where numba has nowhere to cache; the first compile says so.

"Compiled" here counts the signatures the kernels hold in the process, compiled
or loaded from numba's on-disk cache alike, so these tests mean the same with a
warm cache as with a cold one.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnet as fn

pytest.importorskip("numba")
from numba.core import config as numba_config  # noqa: E402
from numba.core.registry import CPUDispatcher  # noqa: E402

from fastnet.kernels.numba import activations, dense, fused, losses, optimizers  # noqa: E402

pytestmark = pytest.mark.skipif(numba_config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT: nothing is compiled")
REPO = Path(__file__).resolve().parents[1]
MODULES = (activations, dense, fused, losses, optimizers)


def compiled():
    """Every (kernel, signature) the compiled kernels hold in this process."""
    found = set()
    for module in MODULES:
        for value in vars(module).values():
            for kernel in value if isinstance(value, tuple) else (value,):
                if isinstance(kernel, CPUDispatcher):
                    found |= {(kernel.py_func.__qualname__, id(kernel), sig) for sig in kernel.overloads}
    return found


def _net(sizes, optimizer, acts=("relu", "tanh", "gelu"), dtype=np.float32):
    layers = [fn.DenseLayer(acts[0], sizes[0], neurons_num=sizes[1], dtype=dtype, rng=0)]
    layers += [fn.DenseLayer(acts[i % len(acts)], neurons_num=n, dtype=dtype, rng=i)
               for i, n in enumerate(sizes[2:-1], 1)]
    layers.append(fn.DenseLayer("identity", neurons_num=sizes[-1], dtype=dtype, rng=9))
    return fn.NeuralNetwork(layers, "softmax_xent", optimizer, backend="numba")


def _data(batch, n_in, n_out, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, n_in)).astype(np.float32), rng.integers(0, n_out, batch)


def test_a_network_of_another_depth_compiles_nothing():
    def steps(sizes):
        for batch in (1, 5, 16):  # the fused step: row loops, register tiles and both
            for opt in (fn.SGD(0.01), fn.SGD(0.01, momentum=0.9)):
                net = _net(sizes, opt)
                assert net.plan(batch) == "fused"
                net.train_step(*_data(batch, sizes[0], sizes[-1]))

    steps((12, 10, 8, 6, 4))  # relu, tanh, gelu, identity: every activation the others have
    before = compiled()
    for sizes in ((12, 4), (12, 10, 4), (12, 10, 9, 8, 7, 6, 4)):
        steps(sizes)
    assert compiled() == before


def _unaligned(a):
    """A copy of ``a`` whose data starts one byte past an element boundary."""
    raw = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(raw.data, a.dtype, a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


def _read_only(a):
    out = a.copy()
    out.setflags(write=False)
    return out


def _uses(net, x, y):
    """Every entry point that hands user arrays to the kernels; their results."""
    out = [net.train_step(x[:1], y[:1]), net.train_step(x[:5], y[:5]), net.train_step(x, y)]
    out.append(net.predict(x).copy())
    out.append(net.forward(x[:3]).copy())
    out.append(net.evaluate(x, y)["loss"])
    out.append(net.fit(x, y, epochs=1, batch_size=5, shuffle=False, progress=False)["loss"])
    layer = net.layers[0]
    out.append(layer.forward_pass(x[:2]).copy())
    out.append(layer.backward_pass(layer.y[:2].copy()).copy())
    return out


@pytest.mark.parametrize("make", [_read_only, _unaligned], ids=["read-only", "unaligned"])
def test_read_only_and_unaligned_inputs_compile_nothing_and_change_nothing(make):
    """numba types a read-only array apart and would compile every kernel it reaches
    again; fastnet copies such inputs first (batch by batch for data sets).  An
    unaligned array numba types as aligned, so the copy is what keeps the kernels'
    aligned loads off it: here the results must simply be the same."""
    x, y = _data(40, 12, 4)
    _uses(_net((12, 10, 4), fn.SGD(0.01)), x, y)  # compile (or load) what the writeable inputs need
    before = compiled()
    ref = _uses(_net((12, 10, 4), fn.SGD(0.01)), x, y)
    xs, ys = make(x), make(y)
    got = _uses(_net((12, 10, 4), fn.SGD(0.01)), xs, ys)
    assert compiled() == before
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g, r)  # the same kernels on the same values: bitwise
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(ys, y)


def _run(code, env=None, cwd=None, timeout=600):
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


WARMUP = """
import json, numpy as np
from numba.core import event
import fastnet as fn
from fastnet.kernels.numba import warm
import test_jit_compile as t

def dtypes():
    # the dtype of each signature in this process: that of its first float array argument
    out = set()
    for _, _, sig in t.compiled():
        arrays = [a for a in sig if hasattr(a, "dtype") and str(a.dtype).startswith("float")]
        if arrays:
            out.add(str(arrays[0].dtype))
    return sorted(out)

def compiles(run):
    # the kernels numba compiles (not loads from its cache) while run() runs
    record = event.RecordingListener()
    with event.install_listener("numba:compile", record):
        run()
    return sorted({ev.data["dispatcher"].py_func.__qualname__ for _, ev in record.buffer if ev.is_start})

def users():
    # what users run, none of it the shape of warmup()'s networks
    for sizes in ((30, 20, 5), (30, 40, 30, 20, 10, 5)):
        for acts in (("relu", "tanh", "gelu"), ("sigmoid", "elu", "softplus", "leaky_relu")):
            for opt in (fn.SGD(0.01), fn.SGD(0.01, momentum=0.9, nesterov=True), fn.Adam(1e-3)):
                net = t._net(sizes, opt, acts)
                for batch in (1, 2, 7, 16, 64):
                    net.train_step(*t._data(batch, sizes[0], sizes[-1]))
                x, y = t._data(50, sizes[0], sizes[-1])
                net.fit(x, y, epochs=1, batch_size=16, validation_data=(x, y), progress=False)
                net.fit(x, y, epochs=1, batch_size=16, mode="gd", progress=False)
                net.predict(x)

fn.warmup()
report = {"after warmup()": dtypes()}
report["compiled by users after warmup()"] = compiles(users)
report["compiled of warm.py's list after warmup()"] = compiles(lambda: warm.compile_share(["float32"], 0, 1))
fn.warmup("all")
report["after warmup('all')"] = dtypes()
print(json.dumps(report))
"""


def test_warmup_compiles_one_dtype_and_everything_users_then_run():
    """In a new process (sharing this session's on-disk cache, so it costs
    compile time only where the cache is cold)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get(
        "PYTHONPATH", "")]))
    report = json.loads(_run(WARMUP, env=env).stdout.strip().splitlines()[-1])
    assert report["after warmup()"] == ["float32"]
    assert report["compiled by users after warmup()"] == []
    # every kernel signature warm.py lists (what its helper processes compile) is cached
    assert report["compiled of warm.py's list after warmup()"] == []
    assert report["after warmup('all')"] == ["float32", "float64"]


def test_a_share_of_the_kernels_compiles_in_a_process_of_its_own():
    """What warmup()'s helper processes run."""
    done = _run("import runpy, sys; sys.argv = ['warm', 'float32', '1', '2']; "
                "runpy.run_module('fastnet.kernels.numba.warm', run_name='__main__')")
    assert done.stderr == ""


def test_warmup_refuses_a_dtype_it_cannot_compile():
    for bad in ("numba", np.int32, "float16"):
        with pytest.raises(ValueError, match="dtype must be None, 'float32', 'float64' or 'all'"):
            fn.warmup(bad)


# -- the cache ------------------------------------------------------------------------------
def _install_copy(tmp_path):
    """The files of a regular (non-editable) install: fastnet/ with its kernels in
    fastnet/kernels/, as pyproject.toml lays them out."""
    site = tmp_path / "site"
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "fastnet", site / "fastnet", ignore=skip)
    shutil.copytree(REPO / "kernels", site / "fastnet" / "kernels", ignore=skip)
    return site


def _env(site, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    return {**env, "PYTHONPATH": str(site), **extra}


PREDICT = """
import json, numpy as np
from numba.core import event
import fastnet as fn
from fastnet.info import jit_cache_dir

compiles = event.RecordingListener()
event.register("numba:compile", compiles)
net = fn.NeuralNetwork([fn.DenseLayer("relu", 4, neurons_num=3, rng=0)], "mse", backend="numba")
net.predict(np.ones((1000, 4), np.float32))  # BLAS for x @ w, then the compiled ReLU pass
names = sorted({ev.data["dispatcher"].py_func.__module__ for _, ev in compiles.buffer})
print(json.dumps({"file": fn.__file__, "cache": jit_cache_dir(), "compiled": names}))
"""


def test_a_regular_install_caches_beside_its_kernels_and_recompiles_when_a_source_changes(tmp_path):
    site = _install_copy(tmp_path)
    env = _env(site)
    first = json.loads(_run(PREDICT, env=env, cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert first["file"] == str(site / "fastnet" / "__init__.py")  # the copy, not this checkout
    assert first["cache"] == str(site / "fastnet" / "kernels" / "numba" / "__pycache__")
    assert "fastnet.kernels.numba.activations" in first["compiled"]
    assert any(p.suffix == ".nbc" for p in Path(first["cache"]).iterdir())
    again = json.loads(_run(PREDICT, env=env, cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert again["compiled"] == []  # all from the cache
    # a change in another kernel module than the compiled kernel's own: numba alone
    # would have reused the cached ReLU pass (it checks the defining file only)
    with open(site / "fastnet" / "kernels" / "numba" / "tuning.py", "a") as f:
        f.write("\n# changed\n")
    changed = json.loads(_run(PREDICT, env=env, cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert "fastnet.kernels.numba.activations" in changed["compiled"]


def test_the_cache_folder_reported_is_the_one_used(tmp_path):
    site = _install_copy(tmp_path)
    cache = tmp_path / "cache"
    report = json.loads(_run(PREDICT, env=_env(site, NUMBA_CACHE_DIR=str(cache)),
                             cwd=tmp_path).stdout.strip().splitlines()[-1])
    used = Path(report["cache"])
    assert used.parent == cache  # numba keeps a subfolder per source folder
    assert any(p.suffix == ".nbc" for p in used.iterdir())
    assert not (site / "fastnet" / "kernels" / "numba" / "__pycache__").exists()
    info = subprocess.run([sys.executable, "-m", "fastnet", "info"], cwd=tmp_path, capture_output=True,
                          env=_env(site, NUMBA_CACHE_DIR=str(cache)), text=True, timeout=120)
    assert f"compiled kernels in {used}\n" in info.stdout, info.stdout


NO_CACHE = """
import warnings
import numpy as np
import fastnet as fn

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    layers = [fn.DenseLayer("relu", 3, neurons_num=2), fn.DenseLayer("identity", 2, neurons_num=2)]
    net = fn.NeuralNetwork(layers, "mse")
    net.train_step(np.ones((2, 3), np.float32), np.zeros((2, 2), np.float32))
print("backends", fn.available_backends(), [layer.backend for layer in layers])
print("warnings", [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)])
try:
    fn.DenseLayer("relu", 3, neurons_num=2, backend="numba")
except ImportError as exc:
    print("numba:", exc)
"""


def test_without_a_writable_cache_auto_falls_back_to_numpy_with_one_warning(tmp_path):
    """The package's folder cannot hold a __pycache__ (a file is in the way, as an
    unwritable site-packages would refuse one) and neither can the user's cache
    folder: numba has nowhere to cache, and raised a RuntimeError at import."""
    site = _install_copy(tmp_path)
    (site / "fastnet" / "kernels" / "numba" / "__pycache__").write_text("not a folder")
    blocked = tmp_path / "no-cache-here"
    blocked.write_text("not a folder")
    out = _run(NO_CACHE, env=_env(site, XDG_CACHE_HOME=str(blocked), HOME=str(blocked)), cwd=tmp_path).stdout
    assert "backends ('numpy',) ['numpy', 'numpy']" in out, out
    warned = eval(out.split("warnings ", 1)[1].splitlines()[0])  # noqa: S307 - our own repr
    assert len(warned) == 1 and "computes with NumPy" in warned[0] and "NUMBA_CACHE_DIR" in warned[0], out
    assert "numba: the 'numba' backend cannot be used here" in out and "NUMBA_CACHE_DIR" in out, out


# -- the first compile says so --------------------------------------------------------------
NOTICE = """
import logging
import numpy as np
import fastnet as fn

logging.basicConfig(level=logging.INFO, format="LOG %(name)s %(levelname)s %(message)s")
x, t = np.ones((64, 3), np.float32), np.zeros((64, 2), np.float32)
for act in ("identity", "relu"):  # the second compiles again, and says nothing more in the log
    net = fn.NeuralNetwork([fn.DenseLayer(act, 3, neurons_num=2, rng=0)], "mse", fn.Adam(0.01),
                           backend="numba")
    net.fit(x, t, epochs=1, batch_size=64, progress=True)
print("compiled seconds", fn.backend.compile_seconds())
"""


def test_the_first_compile_is_logged_once_and_shown_on_the_progress_bar(tmp_path):
    done = _run(NOTICE, env=dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path)))
    logs = [line for line in done.stderr.splitlines() if line.startswith("LOG ")]
    assert len(logs) == 1, logs
    assert logs[0].startswith("LOG fastnet INFO compiling JIT kernels, first use only"), logs
    assert str(tmp_path) in logs[0]  # where the kernels are cached
    bar = done.stderr.replace(logs[0], "")
    assert "compiling JIT kernels, first use only" in bar, done.stderr  # the fit's progress bar
    assert float(done.stdout.split("compiled seconds")[1]) > 0


def test_compile_times_are_measured_cold_and_warm_per_kernel():
    """What ``fastnet info --compile-times`` prints, on the cheapest path."""
    from fastnet.info import compile_times

    times = compile_times(("predict",))["predict"]
    cold, warm = times["cold"], times["warm"]
    assert cold["process"] > cold["call"] > 0 and warm["process"] > warm["call"] > 0
    # the MLP's ReLU and identity layers' passes after BLAS's x @ w: all it compiles
    assert set(cold["kernels"]) == {"numba.activations.forward_relu[float32]",
                                    "numba.activations.forward_identity[float32]"}
    assert warm["call"] < cold["call"]  # loaded from the cache the cold run filled

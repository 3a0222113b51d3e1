"""What this machine and installation are: versions, BLAS, threads, JIT cache.

``environment()`` is recorded with every benchmark result; ``fastnet info``
prints it.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from threadpoolctl import threadpool_info

import fastnet
from fastnet.backend import available_backends, get_default_backend, kernels_for, resolve_backend
from fastnet.kernels import _blas


def cpu_model():
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def jit_cache_dir():
    """The folder where numba caches fastnet's compiled kernels (None without numba).

    numba's choice, in order: ``NUMBA_CACHE_DIR`` when set; else the kernels'
    own ``__pycache__`` folder when it is writable (a virtual environment, an
    editable install); else the user's cache folder (``~/.cache/numba`` on
    Linux; a read-only system install).
    """
    if "numba" not in available_backends():
        return None
    return kernels_for("numba").cpu.cache_dir()


def jit_cache_state():
    """The cache folder and how many compiled kernel signatures it holds."""
    folder = jit_cache_dir()
    try:
        entries = [n for n in os.listdir(folder) if n.endswith(".nbc")]
    except (OSError, TypeError):
        entries = []
    return {"dir": folder, "kernels_cached": len(entries)}


def environment():
    """A dict of everything a benchmark result depends on."""
    numba_version = wide_vectors = None
    if "numba" in available_backends():
        import numba

        numba_version = numba.__version__
        wide_vectors = kernels_for("numba").cpu.WIDE_VECTORS
    return {
        "fastnet": fastnet.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba_version,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "backends": list(available_backends()),
        "default_backend": f"{get_default_backend()} -> {resolve_backend(None)}",
        "direct_gemm": _blas.available(),
        "jit_512_bit_vectors": wide_vectors,
        "jit_cache_dir": jit_cache_dir(),
        "threadpools": [
            {k: pool.get(k) for k in ("user_api", "internal_api", "version", "num_threads", "filepath")}
            for pool in threadpool_info()
        ],
        "env": {k: os.environ[k] for k in sorted(os.environ)
                if k.startswith(("OPENBLAS", "OMP_", "MKL_", "NUMBA_"))},
    }


# -- first results in new processes: the cold start ----------------------------------------------
_PRELUDE = """
import json, time
_t0 = time.perf_counter()
import numpy as np
SIZES = (784, 256, 256, 10)

def data(batch):
    rng = np.random.default_rng(0)
    return rng.normal(size=(batch, SIZES[0])).astype(np.float32), rng.integers(0, SIZES[-1], batch)

def mlp(opt, sizes=SIZES):
    import fastnet as fn
    layers = [fn.DenseLayer("relu", sizes[0], neurons_num=sizes[1], rng=0)]
    layers += [fn.DenseLayer("relu", neurons_num=n, rng=i) for i, n in enumerate(sizes[2:-1], 1)]
    layers.append(fn.DenseLayer("identity", neurons_num=sizes[-1], rng=9))
    return fn.NeuralNetwork(layers, "softmax_xent", opt, backend="numba")

def report(start, **extra):
    print(json.dumps({"call": time.perf_counter() - start, **extra, **_compiles()}))

_compiles = lambda: {}
"""

_RECORD = """
import collections, os, re
from numba.core import event

_recorder, _passes = event.RecordingListener(), event.RecordingListener()
event.register("numba:compile", _recorder)
_timed = os.environ.get("NUMBA_LLVM_PASS_TIMINGS") == "1"
if _timed:
    event.register("numba:run_pass", _passes)

def _self_times(buffer, key):
    # seconds per key(event), without the events nested in it
    stack, rows = [], collections.Counter()
    for ts, ev in buffer:
        if ev.is_start:
            stack.append([ts, 0.0])
            continue
        start, nested = stack.pop()
        rows[key(ev)] += ts - start - nested
        if stack:
            stack[-1][1] += ts - start
    return rows

def _name(ev):
    func = ev.data["dispatcher"].py_func
    dtypes = sorted({str(t.dtype) for t in ev.data["args"] if hasattr(t, "dtype")})
    name = func.__module__.replace("fastnet.kernels.", "") + "." + func.__qualname__
    return f"{name}[{','.join(dtypes)}]"

def _compiles():
    out = {"kernels": _self_times(_recorder.buffer, _name)}
    if _timed:  # LLVM's own timers, per kernel and per stage
        llvm, stages, passes = collections.Counter(), collections.Counter(), collections.Counter()
        for ts, ev in _recorder.buffer:
            if ev.is_start:
                continue
            disp = ev.data["dispatcher"]
            timings = disp.overloads[tuple(ev.data["args"])].metadata.get("llvm_pass_timings") or ()
            for named in timings:
                seconds = named.timings.get_total_time()
                llvm[_name(ev)] += seconds
                stages[re.sub(r"Function passes on .*", "Function passes", named.name)] += seconds
                for rec in named.timings.list_records()[:-1]:
                    passes[rec.pass_name] += rec.wall_time
        numba_passes = _self_times(_passes.buffer, lambda ev: re.sub(r" \\[.*", "", ev.data["name"]))
        out.update(llvm=llvm, stages=stages, passes=passes.most_common(15),
                   numba_passes=numba_passes.most_common(12))
    return out
"""


def _step_case(batch, opt, expect):
    return f"""
import fastnet as fn
net, (x, y) = mlp({opt}), data({batch})
assert net.plan({batch}) == {expect!r}, net.plan({batch})
start = time.perf_counter()
net.train_step(x, y)
report(start, plan=net.plan({batch}))
"""


def _after_warmup_case(sizes, batch):
    return f"""
import fastnet as fn
fn.warmup()
net, (x, y) = mlp(fn.SGD(1e-3), sizes={sizes!r}), data({batch})
x = x[:, :{sizes[0]}].copy()
start = time.perf_counter()
net.train_step(x, y)
report(start, plan=net.plan({batch}))
"""


#: The cold-start cases: Python code that builds the 784-256-256-10 ReLU MLP of
#: ``benchmarks/latency.py`` (softmax cross-entropy, float32) and times its first
#: result on one training path, or ``fastnet.warmup()`` itself (``warmup-1-process``:
#: every kernel in this process, as one core would), or (``*-after-warmup*``) the
#: first step of a network of another depth than warmup()'s, after warmup().
FIRST_RESULT_CASES = {
    "fused-1": _step_case(1, "fn.SGD(1e-3)", "fused"),
    "fused-16": _step_case(16, "fn.SGD(1e-3)", "fused"),
    "fused-64": _step_case(64, "fn.SGD(1e-3)", "fused"),
    "fused-64-momentum": _step_case(64, "fn.SGD(1e-3, momentum=0.9)", "fused"),
    "fused-64-adam": _step_case(64, "fn.Adam(1e-3)", "fused"),
    "fused-32-adam": _step_case(32, "fn.Adam(1e-3)", "fused"),
    "predict": """
import fastnet as fn
net, (x, _) = mlp(fn.SGD(1e-3)), data(1000)
start = time.perf_counter()
net.predict(x)
report(start)
""",
    "warmup": """
import fastnet as fn
start = time.perf_counter()
fn.warmup()
report(start)
""",
    "warmup-all": """
import fastnet as fn
start = time.perf_counter()
fn.warmup("all")
report(start)
""",
    "warmup-1-process": """
import fastnet as fn
start = time.perf_counter()
fn.warmup(processes=1)
report(start)
""",
    "5-layers-after-warmup-1": _after_warmup_case((784, 256, 256, 128, 64, 10), 1),
    "5-layers-after-warmup-16": _after_warmup_case((784, 256, 256, 128, 64, 10), 16),
}
#: The training paths among them, for ``fastnet info --compile-times``.
PATH_CASES = ("fused-1", "fused-16", "fused-64", "fused-64-momentum", "fused-64-adam", "predict")


def first_result(code, cache_dir, kernels=False, llvm=False):
    """Run ``code`` (a value of ``FIRST_RESULT_CASES``, or like them) in a new
    Python process with ``NUMBA_CACHE_DIR=cache_dir``.

    Returns ``{"process": s, "call": s, ...}``: ``process`` the whole process's
    wall time (interpreter start to exit, timed from outside), ``call`` the
    timed call inside; with ``kernels``, also ``kernels``: seconds per kernel
    signature compiled (numba's compile events, each without the kernels it
    compiled on the way); with ``llvm`` too (``NUMBA_LLVM_PASS_TIMINGS=1``),
    ``llvm`` (LLVM's seconds per kernel), ``stages`` (per LLVM stage),
    ``passes`` (the slowest LLVM passes) and ``numba_passes`` (numba's compiler
    passes, without those nested in them).  Raises RuntimeError with the
    child's error if it failed.
    """
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    if llvm:
        env["NUMBA_LLVM_PASS_TIMINGS"], kernels = "1", True
    source = _PRELUDE + (_RECORD if kernels else "")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", source + code], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"the cold-start case failed:\n{out.stderr[-3000:]}")
    return {"process": wall, **json.loads(out.stdout.strip().splitlines()[-1])}


def compile_times(cases=(*PATH_CASES, "warmup")):
    """Cold and warm first results of ``FIRST_RESULT_CASES`` (by default every
    path and ``fastnet.warmup()``), each in new processes: an empty cache, then
    the cache that run filled; with the kernels each cold run compiled.  A dict
    per case name: ``{"cold": first_result(...), "warm": first_result(...)}``."""
    out = {}
    for name in cases:
        with tempfile.TemporaryDirectory(prefix="fastnet-cold-") as cache:
            cold = first_result(FIRST_RESULT_CASES[name], cache, kernels=True)
            warm = first_result(FIRST_RESULT_CASES[name], cache)
        out[name] = {"cold": cold, "warm": warm}
    return out


def print_info(with_compile_times=False, out=sys.stdout):
    env = environment()
    w = out.write
    w(f"fastnet {env['fastnet']}  python {env['python']}  numpy {env['numpy']}  "
      f"numba {env['numba'] or 'not installed'}\n")
    w(f"cpu: {env['cpu']}, {env['cores']} cores\n")
    w(f"backends available: {', '.join(env['backends'])}; default: {env['default_backend']}\n")
    for pool in env["threadpools"]:
        w(f"{pool['user_api']}: {pool['internal_api']} {pool['version']}, "
          f"{pool['num_threads']} threads ({pool['filepath']})\n")
    w(f"direct BLAS gemm (alpha, beta): {env['direct_gemm'] or 'none found, NumPy fallback'}\n")
    if env["jit_512_bit_vectors"] is not None:
        wide = env["jit_512_bit_vectors"]
        w(f"JIT loops with 512-bit vectors: {'yes' if wide else 'no'}; loop/BLAS thresholds "
          f"measured on {'Emerald Rapids' if wide else 'Zen 3'} (both chosen by CPU model)\n")
    w("threads: fastnet.set_num_threads(n) limits BLAS and numba together; "
      f"now {fastnet.get_num_threads()}\n")
    for key, value in env["env"].items():
        w(f"env {key}={value}\n")
    if "numba" in env["backends"]:
        cache = jit_cache_state()
        w(f"JIT cache: {cache['kernels_cached']} compiled kernels in {cache['dir']}\n")
        if with_compile_times:
            start = time.perf_counter()
            w("JIT compile times (new processes; cold: an empty cache, warm: the one it filled):\n")
            w(f"  {'first result of':18s} {'cold s':>7s} {'warm s':>7s}  (whole process: cold, warm)\n")
            times = compile_times()
            for name, t in times.items():
                w(f"  {name:18s} {t['cold']['call']:7.2f} {t['warm']['call']:7.2f}  "
                  f"({t['cold']['process']:.2f}, {t['warm']['process']:.2f})\n")
            with tempfile.TemporaryDirectory(prefix="fastnet-cold-") as cache:
                kernels = first_result(FIRST_RESULT_CASES["warmup-1-process"], cache, kernels=True)["kernels"]
            w(f"  seconds per kernel, all compiled in one process (warmup(processes=1): "
              f"{sum(kernels.values()):.1f} s in {len(kernels)} kernel signatures), slowest first:\n")
            for kernel, seconds in sorted(kernels.items(), key=lambda kv: -kv[1]):
                w(f"  {seconds:7.2f}  {kernel}\n")
            w(f"  [{time.perf_counter() - start:.0f} s to measure]\n")
        else:
            w("JIT compile time: run 'fastnet info --compile-times' to measure it per path "
              "and per kernel\n")


def main(argv=None):
    """``fastnet info [--compile-times]``."""
    import argparse

    from fastnet.cli import COMMANDS

    parser = argparse.ArgumentParser(prog="fastnet info", description=COMMANDS["info"],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--compile-times", action="store_true",
                        help="also measure the JIT compile time per path and per kernel, cold and warm "
                             "(takes a minute or more)")
    args = parser.parse_args(argv)
    print_info(with_compile_times=args.compile_times)
    return 0

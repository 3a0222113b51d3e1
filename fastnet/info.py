"""What this machine and installation are: versions, BLAS, threads, JIT cache.

``environment()`` is recorded with every benchmark result; ``fastnet info``
prints it.
"""

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
    """Where numba keeps fastnet's compiled kernels."""
    override = os.environ.get("NUMBA_CACHE_DIR")
    if override:
        return override
    import fastnet.kernels

    return os.path.join(os.path.dirname(fastnet.kernels.__file__), "__pycache__")


def jit_cache_state():
    """The cache folder and how many compiled kernel signatures it holds."""
    folder = jit_cache_dir()
    try:
        entries = [n for n in os.listdir(folder) if n.startswith("_numba.") and n.endswith(".nbi")]
    except OSError:
        entries = []
    return {"dir": folder, "kernels_cached": len(entries)}


def environment():
    """A dict of everything a benchmark result depends on."""
    numba_version = wide_vectors = None
    if "numba" in available_backends():
        import numba

        numba_version = numba.__version__
        wide_vectors = kernels_for("numba").WIDE_VECTORS
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
        "threadpools": [
            {k: pool.get(k) for k in ("user_api", "internal_api", "version", "num_threads", "filepath")}
            for pool in threadpool_info()
        ],
        "env": {k: os.environ[k] for k in sorted(os.environ)
                if k.startswith(("OPENBLAS", "OMP_", "MKL_", "NUMBA_"))},
    }


def _warmup_seconds(cache_dir=None):
    """Seconds ``fastnet.warmup()`` takes in a new process (optionally with its own cache)."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    code = "import fastnet, time; t = time.perf_counter(); fastnet.warmup(); print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def compile_times():
    """(cold, warm) seconds of ``fastnet.warmup()`` in fresh processes: with an
    empty JIT cache, and then with the cache that run filled."""
    with tempfile.TemporaryDirectory() as cache:
        cold = _warmup_seconds(cache)
        warm = _warmup_seconds(cache)
    return cold, warm


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
            cold, warm = compile_times()
            w(f"JIT compile time (fastnet.warmup() in a new process): cold cache {cold:.1f} s, "
              f"warm cache {warm:.2f} s  [{time.perf_counter() - start:.0f} s to measure]\n")
        else:
            w("JIT compile time: run 'fastnet info --compile-times' to measure "
              "(it compiles every kernel cold: about 1.5 min on 2 Zen 3 cores)\n")

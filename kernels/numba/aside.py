"""Compiling kernels in a helper process while this one compiles others (no twin
in ``fastnet.kernels.numpy``: nothing there compiles).

numba compiles one kernel at a time in a process (it holds a lock for the
whole compile), so the kernels a first step needs compile one after another:
the step itself (1.4 s for the SGD step, Intel Xeon, cold) after its leaves.
With a second core, ``Aside`` compiles the step in a helper process, ``python
-m fastnet.kernels.numba.warm --only``, while this process compiles the
leaves; the helper leaves it in numba's on-disk cache, from which this
process loads it when it calls it.  A step opens one block before its checks
of its batch (``fastnet.training.compiling_ahead``) and one around its
leaves (``fused.ready``), which waits for the first's helper: in a cold
process the helper starts with the step, not after the checks' kernels and
numba's own set-up (0.7 s and 0.4 s of a cold fused-64 on Zen 3).
``fastnet.warmup`` starts its helpers with ``start_helper`` too.
"""

import os
import subprocess
import sys
import threading
import warnings

import numpy as np

from . import cpu

#: Seconds to wait for a helper before compiling its kernels here instead.
HELPER_TIMEOUT = 600


def start_helper(argv):
    """``python -m fastnet.kernels.numba.warm *argv`` in a new process (a
    ``subprocess.Popen``, stderr piped, stdout discarded), importing this
    fastnet wherever it was imported from.  OSError if it cannot start."""
    import fastnet

    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnet.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    return subprocess.Popen([sys.executable, "-m", "fastnet.kernels.numba.warm", *map(str, argv)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def spare_core():
    """Whether this process may keep a second core busy: it may run on more than
    one, and numba and BLAS may each use more than one thread
    (``fastnet.set_num_threads(1)`` allows one, as distributed training's
    ``threads_per_rank`` does when the ranks fill the machine)."""
    import numba
    from threadpoolctl import threadpool_info

    cores = usable_cores()
    blas = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return min(cores, numba.get_num_threads(), max(blas, default=cores)) > 1


def usable_cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Aside:
    """``with Aside(dtype, kernels):`` compiles ``kernels`` ((kernel, argument
    types) pairs, each in ``warm.signatures(dtype)``) in a helper process while
    the block compiles others here.

    The helper starts at the block's first compile (none when every kernel the
    block needs is in the cache), and only for those of ``kernels`` that this
    process has not compiled or loaded and the on-disk cache does not hold,
    when there are any and a core is spare (``spare_core``).  Leaving the block
    waits for the helper (so the kernels then load from the cache), or kills
    it when the block raised.  A helper that cannot start, fails or takes
    longer than ``HELPER_TIMEOUT`` leaves its kernels to this process, which
    compiles them when it calls them (a failure is reported as a
    RuntimeWarning).

    ``cold``: (kernel, argument types) pairs the block compiles before any
    other.  When none of them is compiled here or in the cache, the process
    is cold and the helper starts as the block opens, not at the block's
    first compile: numba's first compile in a process begins about 0.4 s
    after its call (AMD EPYC, Zen 3), its own set-up.

    Inside a block of an ``Aside`` of the same dtype and kernels (in this
    thread), the inner one starts nothing: the outer block's helper starts at
    the first compile of either, and leaving the inner block waits for it, or,
    when the inner block raised, leaves it to the outer, which kills it.  So a
    caller can open the block before compiles of its own (a step's checks of
    its batch) while the code that calls the kernels still waits for them.
    """

    def __init__(self, dtype, kernels, cold=()):
        self.dtype, self.kernels, self.cold = np.dtype(dtype).name, list(kernels), list(cold)
        self.helper, self._stop, self._outer = None, None, None

    def __enter__(self):
        stack = _open_asides()
        self._outer = next((a for a in stack if (a.dtype, a.kernels) == (self.dtype, self.kernels)), None)
        stack.append(self)
        if self._outer is None and self.kernels and not cpu.DISABLED:
            self._stop = cpu.on_compile(self._compiling)
            if self.cold and not any(_have(*entry) for entry in self.cold):
                self._compiling(True)
        return self

    def _compiling(self, starting):
        if not starting:
            return
        self._stop_watching()  # once: at the first compile, or never
        names = [kernel.__name__ for kernel, args in self.kernels if not _have(kernel, args)]
        if names and spare_core():
            try:
                self.helper = start_helper(["--only", self.dtype, *names])
            except OSError:  # e.g. no process may be started here: this one compiles them
                pass

    def __exit__(self, kind, value, traceback):
        _open_asides().remove(self)
        if self._outer is not None:  # the outer block's helper
            if kind is None:
                self._outer.wait(stacklevel=3)
            return
        if kind is not None:  # interrupted or failed: the helper's work is not wanted
            self._stop_watching()
            helper, self.helper = self.helper, None
            if helper is not None:
                _kill(helper)
            return
        self.wait(stacklevel=3)

    def _stop_watching(self):
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()

    def wait(self, stacklevel=2):
        """Wait for the helper, if one was started (its kernels then load from
        the cache), and start none after this; a failed helper's warning is
        given at ``stacklevel``."""
        self._stop_watching()
        helper, self.helper = self.helper, None
        if helper is None:
            return
        try:
            _, err = helper.communicate(timeout=HELPER_TIMEOUT)
        except subprocess.TimeoutExpired:
            err = _kill(helper)
        except BaseException:  # interrupted while waiting: nothing more is wanted of it
            _kill(helper)
            raise
        if helper.returncode != 0:
            warnings.warn(f"a helper process compiling {', '.join(k.__name__ for k, _ in self.kernels)} "
                          f"failed (exit {helper.returncode}); this process compiles them: "
                          f"{err.decode(errors='replace')[-500:]}", RuntimeWarning, stacklevel=stacklevel)


def _have(kernel, args):
    """Whether ``kernel`` for ``args`` is compiled (or loaded) here or in numba's on-disk cache."""
    return tuple(args) in kernel.overloads or cpu.cached(kernel, args)


def _kill(helper):
    """Stop a helper and return what it wrote to stderr."""
    helper.kill()
    return helper.communicate()[1]


_THREAD = threading.local()


def _open_asides():
    """This thread's open ``Aside`` blocks, outermost first."""
    if not hasattr(_THREAD, "open"):
        _THREAD.open = []
    return _THREAD.open

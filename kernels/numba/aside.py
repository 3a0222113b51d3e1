"""Compiling kernels in a helper process while this one compiles others (no twin
in ``fastnet.kernels.numpy``: nothing there compiles).

numba compiles one kernel at a time in a process (it holds a lock for the
whole compile), so the kernels a first step needs compile one after another:
the step itself (1.4-2 s for the SGD step, cold), and its leaves (about 0.2 s
each: 7 at B = 64 by BLAS, 11 at B = 16 by the register tiles).  With a
second core, ``Aside`` starts a helper process, ``fastnet.kernels.numba.warm
--leaves DTYPE`` (``start_helper``), which sets up numba's compiler while
this process checks its batch, then takes the leaves this process offers
(``Aside.share``), from the first, while this process compiles the step and
then the leaves from the last; where they meet, the rest are the helper's,
in numba's on-disk cache, and load here (``fused.ready``).  So the two finish
together whichever part is larger, and nothing this process needs waits on
the helper: it compiles whatever the helper has not cached.  A step opens
one block before its checks of its batch (``fastnet.training.compiling_ahead``)
and one around its kernels (``fused.ready``): in a cold process the helper
starts with the step, and its own set-up (imports and numba's, 0.8 s on Zen 4)
runs beside the checks'.  ``fastnet.warmup`` starts its helpers with
``start_helper`` too.
"""

import os
import subprocess
import sys
import threading
import warnings

import numpy as np

from . import cpu


def start_helper(argv):
    """``python -m fastnet.kernels.numba.warm *argv``, in effect, in a new process (a
    ``subprocess.Popen``, stderr piped, stdout discarded; stdin piped for
    ``--leaves``), importing this fastnet wherever it was imported from.
    OSError if it cannot start."""
    import fastnet

    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnet.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    argv = [str(a) for a in argv]
    # not ``-m``: that puts the working directory first, and a ``fastnet`` there (a
    # checkout of another version) would be the one imported
    run = (f"import runpy, sys; sys.path.insert(0, {root!r}); "
           "runpy.run_module('fastnet.kernels.numba.warm', run_name='__main__', alter_sys=True)")
    return subprocess.Popen([sys.executable, "-c", run, *argv], env=env,
                            stdin=subprocess.PIPE if argv[:1] == ["--leaves"] else None,
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
    """``with Aside(dtype, kernels) as block:`` a block in which this process
    compiles ``kernels`` ((kernel, argument types) pairs: the step) and the
    leaves it passes to ``block.share``, while a helper process compiles those
    leaves from the other end.

    A helper starts only when some of ``kernels`` are neither compiled here
    nor in the on-disk cache (a first step on this machine, or after an
    upgrade), and a core is spare (``spare_core``): at ``share``, when it
    offers a leaf the cache lacks; or as the block opens, when none of
    ``cold`` ((kernel, argument types) pairs the block compiles before any
    other: the step's checks of its batch) is compiled here or cached either,
    so that the helper's set-up runs beside theirs.  The helper is told the
    leaves by one line on its stdin; it compiles them in that order until it
    meets one compiled or cached already (``warm.compile_until_met``), and
    leaves them in the cache.  ``finish`` (and leaving the block) ends it:
    this process has by then compiled, or loaded from the cache, whatever it
    needs, so a helper still running is killed.  One that could not start or
    failed changes nothing but the time taken (a failure is reported as a
    RuntimeWarning).

    Inside a block of an ``Aside`` of the same dtype (in this thread), the
    inner one starts no helper of its own: ``share`` and ``finish`` in either
    act on the outer block's helper, which leaving the inner block ends too.
    So a caller can open the block before the compiles of its checks while
    the code that compiles the kernels opens its own, even when the caller
    guessed another step (``fit`` on fewer rows than its batch size: the
    helper's leaves do not depend on the step).
    """

    def __init__(self, dtype, kernels, cold=()):
        self.dtype, self.kernels, self.cold = np.dtype(dtype).name, list(kernels), list(cold)
        self.helper, self._outer, self._told = None, None, False

    def __enter__(self):
        stack = _open_asides()
        self._outer = next((a for a in stack if a.dtype == self.dtype), None)
        stack.append(self)
        if self._outer is None and self.cold and not any(have(*entry) for entry in self.cold):
            self._start(self.kernels)
        return self

    def _start(self, kernels):
        if self.helper is None and not cpu.DISABLED and not all(have(*entry) for entry in kernels) \
                and spare_core():
            try:
                self.helper = start_helper(["--leaves", self.dtype])
            except OSError:  # e.g. no process may be started here: this one compiles everything
                pass

    def _owner(self):
        return self._outer if self._outer is not None else self

    def share(self, leaves):
        """Offer the helper ``leaves`` ((kernel, argument types) pairs of
        ``fused.LEAVES``, as ``warm.signatures`` has them) in the order it
        should take them; this process takes them from the other end,
        loading from the cache those the helper has compiled.
        Starts the helper, when none has started, if the cache lacks one of
        them.  Once per helper; nothing happens without one."""
        owner = self._owner()
        if owner._told:
            return
        if owner.helper is None and not all(have(*entry) for entry in leaves):
            owner._start(self.kernels)
        if owner.helper is None:
            return
        owner._told = True
        if owner.helper.poll() is not None:  # ended already: ``finish`` says how
            return
        try:  # one line: the helper reads one
            owner.helper.stdin.write((" ".join(kernel.__name__ for kernel, _ in leaves) + "\n").encode())
            owner.helper.stdin.flush()
        except (OSError, ValueError):  # the helper has ended: ``finish`` says how
            pass

    def finish(self, stacklevel=2):
        """End the helper: this process needs nothing more of it.  A helper
        still running is killed (it may be compiling a leaf this process has
        compiled too; killed as numba saves it, the cache may keep a temporary
        file or an entry without its code, which the next process to need
        that leaf compiles again); one that failed is reported
        (RuntimeWarning, at ``stacklevel``)."""
        owner = self._owner()
        helper, owner.helper = owner.helper, None
        if helper is None:
            return
        failed = helper.poll() not in (None, 0)
        err = _kill(helper)
        if failed:
            names = ", ".join(kernel.__name__ for kernel, _ in owner.kernels)
            warnings.warn(f"a helper process compiling the leaves of {names} failed (exit "
                          f"{helper.returncode}); this process compiled them: "
                          f"{err.decode(errors='replace')[-500:]}", RuntimeWarning, stacklevel=stacklevel + 1)

    def __exit__(self, kind, value, traceback):
        _open_asides().remove(self)
        self.finish(stacklevel=2)


def have(kernel, args):
    """Whether ``kernel`` for ``args`` is compiled (or loaded) here or in numba's on-disk cache."""
    return tuple(args) in kernel.overloads or cpu.cached(kernel, args)


def _kill(helper):
    """Stop a helper (if it is still running) and return what it wrote to stderr."""
    if helper.poll() is None:
        helper.kill()
    return helper.communicate()[1] or b""


_THREAD = threading.local()


def _open_asides():
    """This thread's open ``Aside`` blocks, outermost first."""
    if not hasattr(_THREAD, "open"):
        _THREAD.open = []
    return _THREAD.open

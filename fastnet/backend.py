"""The backend switch: which kernel module computes a layer's arithmetic.

``"numpy"`` is the reference (``fastnet.kernels.numpy``); ``"numba"`` the JIT
path (``fastnet.kernels.numba``), available when numba imports and has a
writable place for its cache of compiled kernels; ``"auto"`` takes numba when
it is available and NumPy otherwise (with one warning when numba is installed
but cannot be used).  ``None`` wherever a
backend is accepted means the process-wide default, which starts as
``"auto"`` and is changed with :func:`set_default_backend`.

numba is imported here and nowhere else, lazily: the first time a backend
other than ``"numpy"`` is resolved.
"""

import contextlib
import importlib
import logging
import time
import warnings

from fastnet._workspace import realigned

BACKENDS = ("auto", "numpy", "numba")
INSTALL_HINT = "pip install numba  (or: pip install 'fastnet-dense[jit]')"
#: What the logs and progress bars say while the JIT kernels compile.
COMPILING = "compiling JIT kernels, first use only"
_log = logging.getLogger("fastnet")

_default = "auto"
_numba_error = None  # why the numba backend could not be imported, once tried
_numba_checked = False
_warned_auto = False  # the 'auto' fallback's warning, given once per process


def _check_name(name):
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {name!r}")


def _numba_available():
    global _numba_checked, _numba_error
    if not _numba_checked:
        try:
            kernels = importlib.import_module("fastnet.kernels.numba")
        except ImportError as exc:
            _numba_error = exc
        else:
            if not _compile_log.registered:
                kernels.cpu.on_compile(_compile_log)
                _compile_log.registered = True
        _numba_checked = True
    return _numba_error is None


class _CompileLog:
    """The one log record (INFO, logger "fastnet") of a process's first JIT
    compile, and the compile's display on the progress bars that asked for it
    (``compile_notice``); it also adds up the seconds spent compiling."""

    registered = logged = False

    def __init__(self):
        self.shows, self.seconds, self._start = [], 0.0, None

    def __call__(self, starting):
        if starting:
            self._start = time.perf_counter()
            if not self.logged:
                self.logged = True
                _log.info("%s (cached in %s)", COMPILING, kernels_for("numba").cpu.cache_dir())
        elif self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None
        for show in list(self.shows):
            show(starting)


_compile_log = _CompileLog()


def compile_seconds():
    """Seconds this process has spent compiling the JIT kernels so far."""
    return _compile_log.seconds


@contextlib.contextmanager
def compile_notice(show):
    """While active, a JIT compile calls ``show(True)`` as it starts and
    ``show(False)`` when it is done (e.g. to put ``COMPILING`` on a progress bar)."""
    _compile_log.shows.append(show)
    try:
        yield
    finally:
        _compile_log.shows.remove(show)


def bar_notice(bar, idle):
    """A ``show`` for ``compile_notice`` that puts ``COMPILING`` on tqdm ``bar``,
    displayed at once (whatever the bar's delay), and ``idle`` back afterwards,
    shown at the bar's next update (not at once: kernels compile one after
    another, and the text would flicker between them)."""
    def show(starting):
        bar.set_description_str(COMPILING if starting else idle, refresh=False)
        if starting and not bar.disable:
            bar.refresh()
    return compile_notice(show)


def _numba_installed_but_unusable():
    """numba imports, but the JIT kernels cannot be used (e.g. no writable cache)."""
    return (_numba_error is not None
            and not (isinstance(_numba_error, ModuleNotFoundError) and _numba_error.name == "numba"))


def _forget_numba():
    """Forget the cached numba import result (for tests that hide numba)."""
    global _numba_checked, _numba_error, _warned_auto
    _numba_checked, _numba_error, _warned_auto = False, None, False


def set_default_backend(name):
    """Set the process-wide default backend (``"auto"``, ``"numpy"`` or ``"numba"``)."""
    _check_name(name)
    resolve_backend(name)  # fail now, not at the first layer, if it is unavailable
    global _default
    _default = name


def get_default_backend():
    """The process-wide default backend name."""
    return _default


def available_backends():
    """Names of the concrete backends that can run here, fastest last."""
    return ("numpy", "numba") if _numba_available() else ("numpy",)


def resolve_backend(name):
    """Turn a backend request into a concrete backend name (``"numpy"`` or ``"numba"``).

    ``None`` means the process-wide default and ``"auto"`` the fastest
    available backend.  An explicit ``"numba"`` without numba raises an
    ``ImportError`` that says how to install it.
    """
    if name is None:
        name = _default
    _check_name(name)
    if name == "auto":
        backend = available_backends()[-1]
        if backend == "numpy" and _numba_installed_but_unusable():
            global _warned_auto
            if not _warned_auto:
                _warned_auto = True
                warnings.warn(f"backend 'auto' computes with NumPy: numba is installed but its JIT "
                              f"kernels cannot be used here ({_numba_error})", RuntimeWarning, stacklevel=2)
        return backend
    if name == "numba" and not _numba_available():
        if _numba_installed_but_unusable():
            raise ImportError(f"the 'numba' backend cannot be used here: {_numba_error}")
        raise ImportError(
            f"the 'numba' backend needs numba, which could not be imported ({_numba_error}); "
            f"install it with: {INSTALL_HINT}"
        )
    return name


def kernels_for(name):
    """The kernel module of a concrete backend name."""
    return importlib.import_module(f"fastnet.kernels.{name}")


class HoldsKernels:
    """Copies of an object that keeps its backend's name as ``_backend`` and
    that backend's kernel module as ``_k``.

    ``copy.deepcopy`` and pickle: the module, which pickle cannot take, is left
    out and found again from the name (NumPy's kernels, with a warning, where
    that backend is not available); the caches named in ``_CACHES`` are not
    copied (None in the copy, workspaces ``{}``: the next pass makes them
    again); the arrays come back 64-byte aligned (``realigned``).
    ``copy.copy`` is a plain shallow copy: every attribute shared.
    """

    _CACHES = ()

    @property
    def kernels(self):
        """The kernel module of this object's backend (``fastnet.kernels.numpy``
        or ``fastnet.kernels.numba``), which computes for it."""
        return self._k

    def __copy__(self):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_k", None)
        state.update(dict.fromkeys(self._CACHES))
        if "_store" in state:
            state["_store"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(realigned(state))
        try:
            backend = resolve_backend(self._backend)
        except ImportError as exc:
            warnings.warn(f"this {type(self).__name__} was copied from one on the {self._backend!r} "
                          f"backend, which is not available here ({exc}); it computes with NumPy",
                          RuntimeWarning, stacklevel=2)
            backend = "numpy"
        self._backend, self._k = backend, kernels_for(backend)

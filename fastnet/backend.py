"""The backend switch: which kernel module computes a layer's arithmetic.

``"numpy"`` is the reference (``fastnet.kernels._numpy``); ``"numba"`` the JIT
path (``fastnet.kernels._numba``), available when numba imports; ``"auto"``
takes numba when it is available and NumPy otherwise.  ``None`` wherever a
backend is accepted means the process-wide default, which starts as
``"auto"`` and is changed with :func:`set_default_backend`.

numba is imported here and nowhere else, lazily: the first time a backend
other than ``"numpy"`` is resolved.
"""

import importlib

from fastnet._workspace import realigned

BACKENDS = ("auto", "numpy", "numba")
INSTALL_HINT = "pip install numba  (or: pip install 'fastnet-dense[jit]')"

_default = "auto"
_numba_error = None  # why the numba backend could not be imported, once tried
_numba_checked = False


def _check_name(name):
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {name!r}")


def _numba_available():
    global _numba_checked, _numba_error
    if not _numba_checked:
        try:
            importlib.import_module("fastnet.kernels._numba")
        except ImportError as exc:
            _numba_error = exc
        _numba_checked = True
    return _numba_error is None


def _forget_numba():
    """Forget the cached numba import result (for tests that hide numba)."""
    global _numba_checked, _numba_error
    _numba_checked, _numba_error = False, None


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
        return available_backends()[-1]
    if name == "numba" and not _numba_available():
        raise ImportError(
            f"the 'numba' backend needs numba, which could not be imported ({_numba_error}); "
            f"install it with: {INSTALL_HINT}"
        )
    return name


def kernels_for(name):
    """The kernel module of a concrete backend name."""
    return importlib.import_module(f"fastnet.kernels._{name}")


class HoldsKernels:
    """copy.deepcopy and pickle for an object that keeps its backend's kernel
    module as ``_k`` and its backend's name as ``_backend``: the module, which
    pickle cannot take, is left out and found again from the name, and the
    arrays come back 64-byte aligned (``fastnet._workspace.realigned``)."""

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_k"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(realigned(state))
        self._k = kernels_for(self._backend)

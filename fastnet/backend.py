"""The backend switch: which kernel module computes a layer's arithmetic.

``"numpy"`` is the reference (``fastnet.kernels._numpy``).  ``"numba"`` is the
JIT path, which does not exist yet in this version; asking for it raises a
clear error.  ``"auto"`` picks the fastest backend available.  ``None``
wherever a backend is accepted means the process-wide default, which starts as
``"auto"`` and is changed with :func:`set_default_backend`.
"""

import importlib

BACKENDS = ("auto", "numpy", "numba")

_default = "auto"


def _check_name(name):
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {name!r}")


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
    return ("numpy",)


def resolve_backend(name):
    """Turn a backend request into a concrete backend name (``"numpy"`` or ``"numba"``).

    ``None`` means the process-wide default and ``"auto"`` the fastest
    available backend.
    """
    if name is None:
        name = _default
    _check_name(name)
    if name == "auto":
        return available_backends()[-1]
    if name not in available_backends():
        raise ValueError(
            f"backend {name!r} is not available in this version of fastnet; "
            f"available: {available_backends()}"
        )
    return name


def kernels_for(name):
    """The kernel module of a concrete backend name."""
    return importlib.import_module(f"fastnet.kernels._{name}")

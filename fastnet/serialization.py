"""Saving and loading networks as ``.npz`` files, never with pickle.

A file holds one JSON document (``config``: format name and version, dtype,
loss, optimizer and, per layer, its sizes, activation name and alpha, and init
name) and the parameter arrays ``w0, b0, w1, b1, ...``.  ``save`` writes to a
temporary file in the same folder and renames it, so an interrupted save never
leaves a broken model behind.  ``load`` reads with ``allow_pickle=False``,
parses the JSON (which runs nothing) and checks every field, shape and dtype.
"""

import contextlib
import json
import os
import secrets
import zipfile

import numpy as np

from fastnet.activations import _BY_NAME as _ACTIVATIONS
from fastnet.activations import activation_from_name, kernel_code
from fastnet.init import INIT_NAMES, get_init, init_name
from fastnet.layers import DenseLayer, float_dtype
from fastnet.losses import get_loss
from fastnet.optimizers import optimizer_from_config

FORMAT = "fastnet-dense"
FORMAT_VERSION = 1


def save_network(net, path):
    """Write ``net`` to ``path`` atomically; returns the path (``.npz`` appended if missing)."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    layers = []
    arrays = {}
    for i, layer in enumerate(net.layers):
        if kernel_code(layer.activation) is None:
            raise ValueError(
                f"layers[{i}] has a user-defined activation {layer.activation!r}, "
                "which cannot be saved; only the built-in activations can"
            )
        layers.append({
            "n_inputs": layer.n_inputs,
            "neurons_num": layer.neurons_num,
            "activation": layer.activation.name,
            "alpha": layer.activation.alpha,
            "init": init_name(layer.init_func),
        })
        arrays[f"w{i}"] = layer.w
        arrays[f"b{i}"] = layer.b
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dtype": net.dtype.name,
        "loss": net.loss.name,
        "optimizer": {"name": net.optimizer.name, "config": net.optimizer.config()},
        "layers": layers,
    }
    arrays["config"] = np.array(json.dumps(config))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = _new_temp_file(folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _new_temp_file(folder):
    """(fd, path) of a new file in ``folder`` with the permissions open() gives
    (0o666 less the umask); tempfile.mkstemp's 0o600 would pass to the model."""
    while True:
        tmp = os.path.join(folder, f".fastnet-{secrets.token_hex(8)}.npz.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue


class ModelFileError(ValueError):
    """The file is not a fastnet model that this version can read."""


def load_network(path, backend=None):
    """Read a network written by ``save_network``; see the module docstring."""
    try:
        # The file is opened here, not by np.load, which leaves it open when the
        # zip is corrupt; and a .npy file loads as a bare array, not an NpzFile.
        with contextlib.nullcontext(path) if hasattr(path, "read") else open(path, "rb") as f:
            data = np.load(f, allow_pickle=False)
            arrays = None
            if isinstance(data, np.lib.npyio.NpzFile):
                with data:
                    arrays = {key: data[key] for key in data.files}
    except ValueError as exc:
        if "pickle" in str(exc):  # object arrays need pickle, which is refused
            raise ModelFileError(
                f"{path!r} holds pickled data, which fastnet refuses to load: {exc}"
            ) from None
        raise ModelFileError(f"{path!r} is not a readable .npz model file: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(f"{path!r} is not a readable .npz model file: {exc}") from None
    if arrays is None:
        raise ModelFileError(f"{path!r} holds a single .npy array, not a .npz model file")
    if "config" not in arrays:
        raise ModelFileError(f"{path!r} is not a fastnet model file: it has no 'config' entry")
    config = _parse_config(path, arrays.pop("config"))
    try:
        return _build(path, config, arrays, backend)
    except ModelFileError:
        raise
    except (TypeError, ValueError) as exc:  # a dtype, loss, alpha or size the library refuses
        raise ModelFileError(f"{path!r}: {exc}") from None


def _build(path, config, arrays, backend):
    """The network described by a parsed config, with the file's parameters."""
    from fastnet.network import NeuralNetwork

    dtype = float_dtype(config["dtype"])
    layers = []
    for i, spec in enumerate(config["layers"]):
        params = {}
        for name, shape in (("w", (spec["n_inputs"], spec["neurons_num"])), ("b", (1, spec["neurons_num"]))):
            key = f"{name}{i}"
            arr = arrays.pop(key, None)  # checked before anything of the file's sizes is allocated
            if arr is None or arr.shape != shape or arr.dtype != dtype:
                got = "missing" if arr is None else f"{arr.dtype} {arr.shape}"
                raise ModelFileError(f"{path!r}: {key} should be {dtype} {shape}, got {got}")
            if not np.isfinite(arr).all():
                raise ModelFileError(f"{path!r}: {key} holds NaN or inf")
            params[name] = arr
        activation = activation_from_name(spec["activation"], spec["alpha"])
        layer = DenseLayer(activation, spec["n_inputs"], "zeros", spec["neurons_num"],
                           dtype=dtype, backend=backend)
        layer.w[...] = params["w"]
        layer.b[...] = params["b"]
        if spec["init"] is not None:
            layer.init_func = get_init(spec["init"])
        layers.append(layer)
    if arrays:
        raise ModelFileError(f"{path!r}: unexpected entries {sorted(arrays)}")
    try:
        optimizer = optimizer_from_config(config["optimizer"].get("name"),
                                          config["optimizer"]["config"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path!r}: bad optimizer settings: {exc}") from None
    return NeuralNetwork(layers, get_loss(config["loss"]), optimizer, backend=backend)


def _parse_config(path, raw):
    if raw.dtype.kind != "U" or raw.shape != ():
        raise ModelFileError(f"{path!r}: 'config' must be a JSON string")
    try:
        config = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path!r}: 'config' is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{path!r} is not a {FORMAT} model file")
    version = config.get("format_version")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path!r} has format version {config.get('format_version')!r}; "
            f"this fastnet reads version {FORMAT_VERSION}"
        )
    problem = _config_problem(config)
    if problem:
        raise ModelFileError(f"{path!r}: malformed 'config': {problem}")
    return config



def _config_problem(config):
    """What is wrong with a parsed config, or None."""
    layers = config.get("layers")
    if not isinstance(layers, list) or not layers:
        return "'layers' must be a non-empty list"
    for i, spec in enumerate(layers):
        if not isinstance(spec, dict):
            return f"layers[{i}] must be an object"
        if spec.get("activation") not in _ACTIVATIONS:
            return f"layers[{i}] has unknown activation {spec.get('activation')!r}"
        alpha = spec.get("alpha")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            return f"layers[{i}] alpha must be a number, got {alpha!r}"
        if spec.get("init") is not None and spec.get("init") not in INIT_NAMES:
            return f"layers[{i}] has unknown init {spec.get('init')!r}"
        for key in ("n_inputs", "neurons_num"):
            value = spec.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return f"layers[{i}] {key} must be a positive integer, got {value!r}"
    optimizer = config.get("optimizer")
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("config"), dict):
        return "'optimizer' must be an object with 'name' and 'config'"
    if not isinstance(config.get("loss"), str) or not isinstance(config.get("dtype"), str):
        return "'loss' and 'dtype' must be strings"
    return None

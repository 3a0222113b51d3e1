"""Saving and loading networks as ``.npz`` files, never with pickle.

A file holds one JSON document (``config``: format name and version, dtype,
loss, optimizer and, per layer, its sizes, activation name and alpha, and init
name) and the parameter arrays ``w0, b0, w1, b1, ...``.  ``save`` writes to a
temporary file in the same folder and renames it, so an interrupted save never
leaves a broken model behind (a save that fails removes its temporary file;
only a process killed during a save leaves one, a hidden ``.fastnet-*.npz.tmp``
beside the model, which can be deleted).  ``save`` refuses to write what
``load`` would refuse: parameters that are not finite, not arrays, or not of
the network's dtype and the layers' shapes.

``load`` takes a path (str, bytes, ``os.PathLike``) or a binary file object,
never pickles, parses the JSON (which runs nothing) and checks every field;
each array's header (dtype and shape) is checked against the JSON before its
data is read, so no size written in a file makes it allocate more than the
description says.  Whatever is wrong with a file raises ``ModelFileError``
naming it.
"""

import io
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
    """Write ``net`` to ``path`` atomically; returns the path (``.npz`` appended
    if missing).  Refuses, before any file is touched, parameters that ``load``
    would refuse."""
    path = _fs_path(path, "save")
    if not path.endswith(".npz"):
        path += ".npz"
    net.check()  # real arrays of the layers' shapes and the network's dtype, and more
    for i, layer in enumerate(net.layers):
        for name in ("w", "b"):
            if not np.isfinite(getattr(layer, name)).all():
                raise ValueError(f"layers[{i}].{name} holds NaN or inf: a model file holds finite "
                                 "parameters only (load refuses others); nothing was written")
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


_ZIP_MAGIC = b"PK\x03\x04"
_CONFIG_MAX = 1 << 20  # characters: a description of thousands of layers is far less


def _fs_path(path, what, alternative=""):
    """``path`` (str, bytes or os.PathLike) as a str; a TypeError for anything
    else (an int above all, which open() would take as a descriptor)."""
    if isinstance(path, (str, bytes, os.PathLike)):
        return os.fsdecode(os.fspath(path))
    raise TypeError(f"{what} takes a path (str, bytes or os.PathLike){alternative}, got "
                    f"{type(path).__name__} {path!r:.60}")


def load_network(path, backend=None):
    """Read a network written by ``save_network``; see the module docstring."""
    if hasattr(path, "read"):  # a file object: read, never closed here
        name = repr(getattr(path, "name", path))
        try:
            if not isinstance(path.read(0), bytes):
                raise TypeError(f"load needs a file opened in binary mode ('rb'), got {path!r:.60}")
            data = path if path.seekable() else io.BytesIO(path.read())
        except OSError as exc:
            raise ModelFileError(f"{name} cannot be read: {exc}") from None
        return _load(data, name, backend)
    name = repr(_fs_path(path, "load", " or a binary file object"))
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise ModelFileError(f"{name} cannot be opened: {exc}") from None
    with f:
        return _load(f, name, backend)


def _load(f, name, backend):
    try:
        start = f.tell()
        head = f.read(len(_ZIP_MAGIC))
        f.seek(start)
        if head != _ZIP_MAGIC:
            what = "a single .npy array" if head == b"\x93NUM" else f"a file that starts with {head!r}"
            raise ModelFileError(f"{name} is not a .npz model file (a zip archive): it is {what}")
        with zipfile.ZipFile(f) as zf:
            members = {m[:-4] if m.endswith(".npy") else m: m for m in zf.namelist()}
            if "config" not in members:
                raise ModelFileError(f"{name} is not a fastnet model file: it has no 'config' entry")
            raw = _read_member(zf, members.pop("config"), name, "config",
                               lambda shape, dtype: (shape == () and dtype.kind == "U"
                                                     and dtype.itemsize <= 4 * _CONFIG_MAX),
                               "a JSON string")
            config = _parse_config(name, raw)
            try:
                return _build(name, config, zf, members, backend)
            except ModelFileError:
                raise
            except (TypeError, ValueError) as exc:  # a dtype, loss, alpha or size the library refuses
                raise ModelFileError(f"{name}: {exc}") from None
    except ModelFileError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{name} is not a readable .npz model file: {exc}") from None


def _read_member(zf, member, name, key, fits, expected):
    """The array in ``member``, read only when its header (shape, dtype) ``fits``;
    object arrays (pickles) are refused before anything else is read."""
    with zf.open(member) as m:
        version = np.lib.format.read_magic(m)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(m)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(m)
        else:
            raise ModelFileError(f"{name}: {key} is stored in .npy format {version}, not 1.0 or 2.0")
        if dtype.hasobject:
            raise ModelFileError(f"{name}: {key} holds pickled objects, which fastnet refuses to load")
        if not fits(shape, dtype):
            raise ModelFileError(f"{name}: {key} should be {expected}, got {dtype} {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        data = m.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise ModelFileError(f"{name}: {key} is truncated")
    arr = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _build(name, config, zf, members, backend):
    """The network described by a parsed config, with the file's parameters."""
    from fastnet.network import NeuralNetwork

    dtype = float_dtype(config["dtype"])
    layers = []
    for i, spec in enumerate(config["layers"]):
        params = {}
        for pname, shape in (("w", (spec["n_inputs"], spec["neurons_num"])), ("b", (1, spec["neurons_num"]))):
            key = f"{pname}{i}"
            member = members.pop(key, None)
            expected = f"{dtype} {shape}"
            if member is None:
                raise ModelFileError(f"{name}: {key} should be {expected}, got missing")
            # the header is checked before any of the file's sizes is allocated
            arr = _read_member(zf, member, name, key,
                               lambda s, d, shape=shape: s == shape and d == dtype, expected)
            if not np.isfinite(arr).all():
                raise ModelFileError(f"{name}: {key} holds NaN or inf")
            params[pname] = arr
        activation = activation_from_name(spec["activation"], spec["alpha"])
        layer = DenseLayer(activation, spec["n_inputs"], "zeros", spec["neurons_num"],
                           dtype=dtype, backend=backend)
        layer.w[...] = params["w"]
        layer.b[...] = params["b"]
        if spec["init"] is not None:
            layer.init_func = get_init(spec["init"])
        layers.append(layer)
    if members:
        raise ModelFileError(f"{name}: unexpected entries {sorted(members)}")
    try:
        optimizer = optimizer_from_config(config["optimizer"].get("name"),
                                          config["optimizer"]["config"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{name}: bad optimizer settings: {exc}") from None
    return NeuralNetwork(layers, get_loss(config["loss"]), optimizer, backend=backend)


def _parse_config(name, raw):
    try:
        config = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{name}: 'config' is not valid JSON: {exc}") from None
    except RecursionError:
        raise ModelFileError(f"{name}: 'config' is JSON nested too deeply to be a model's") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{name} is not a {FORMAT} model file")
    version = config.get("format_version")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise ModelFileError(
            f"{name} has format version {config.get('format_version')!r}; "
            f"this fastnet reads version {FORMAT_VERSION}"
        )
    problem = _config_problem(config)
    if problem:
        raise ModelFileError(f"{name}: malformed 'config': {problem}")
    return config


def _config_problem(config):
    """What is wrong with a parsed config, or None."""
    layers = config.get("layers")
    if not isinstance(layers, list) or not layers:
        return "'layers' must be a non-empty list"
    for i, spec in enumerate(layers):
        if not isinstance(spec, dict):
            return f"layers[{i}] must be an object"
        if not isinstance(spec.get("activation"), str) or spec["activation"] not in _ACTIVATIONS:
            return f"layers[{i}] has unknown activation {spec.get('activation')!r}"
        alpha = spec.get("alpha")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            return f"layers[{i}] alpha must be a number, got {alpha!r}"
        init = spec.get("init")
        if init is not None and (not isinstance(init, str) or init not in INIT_NAMES):
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

"""Model files: save writes only what load reads back; load takes paths and
binary files, nothing else, and every malformed file raises ModelFileError
naming it, without allocating what the file claims."""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastnet as fn


def _net():
    layers = [fn.DenseLayer("tanh", 4, neurons_num=5, rng=0), fn.DenseLayer("identity", neurons_num=3, rng=1)]
    return fn.NeuralNetwork(layers, "softmax_xent", fn.SGD(0.1), backend="numpy")


def _entries(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _write(path, entries):
    np.savez(path, **entries)
    return path


@pytest.mark.parametrize(("tamper", "message"), [
    (lambda la: la.w.__setitem__((0, 0), np.inf), r"layers\[0\]\.w holds NaN or inf"),
    (lambda la: la.b.__setitem__((0, 1), np.nan), r"layers\[0\]\.b holds NaN or inf"),
    (lambda la: setattr(la, "w", la.w.astype(np.float64)), r"layers\[0\]\.w must be a float32 array"),
    (lambda la: setattr(la, "w", np.ones((4, 4), np.float32)), r"layers\[0\]\.w must be a float32 array"),
    (lambda la: setattr(la, "w", None),
     r"layers\[0\]\.w must be a float32 array of shape \(4, 5\), got None"),
])
def test_save_refuses_what_load_would_refuse_and_keeps_the_old_file(tmp_path, tamper, message):
    net = _net()
    path = net.save(tmp_path / "model.npz")
    before = Path(path).read_bytes()
    tamper(net.layers[0])
    with pytest.raises(ValueError, match=message):
        net.save(path)
    assert Path(path).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary file left


def test_paths_as_bytes_and_pathlike_and_binary_files(tmp_path):
    net = _net()
    written = net.save(os.fsencode(tmp_path / "model"))  # bytes: before, an unrelated TypeError
    assert written == str(tmp_path / "model.npz")
    for source in (os.fsencode(written), tmp_path / "model.npz", written):
        np.testing.assert_array_equal(fn.NeuralNetwork.load(source).parameters()[0], net.parameters()[0])
    with open(written, "rb") as f:
        fn.NeuralNetwork.load(f)
        assert not f.closed  # a file given is never closed by load
    buffer = io.BytesIO(Path(written).read_bytes())
    np.testing.assert_array_equal(fn.NeuralNetwork.load(buffer).parameters()[2], net.parameters()[2])
    with open(written) as text, pytest.raises(TypeError, match="binary mode"):
        fn.NeuralNetwork.load(text)


@pytest.mark.parametrize("bad", [True, 1, 0, 2.5, None, ["model.npz"]])
def test_load_refuses_what_is_not_a_path_or_file(bad):
    with pytest.raises(TypeError, match="load takes a path"):
        fn.NeuralNetwork.load(bad)


@pytest.mark.parametrize("bad", [True, 1, None])
def test_save_refuses_what_is_not_a_path(tmp_path, bad):
    with pytest.raises(TypeError, match="save takes a path"):
        _net().save(bad)


def test_load_of_an_int_leaves_the_process_stdout_open():
    """Before: load(1) opened descriptor 1 as the file and closed it on the way out."""
    code = ("import fastnet as fn\n"
            "for bad in (1, True):\n"
            "    try:\n        fn.NeuralNetwork.load(bad)\n"
            "    except TypeError as exc:\n        print('refused', exc)\n"
            "print('stdout still open')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("refused") == 2 and "stdout still open" in out.stdout


def _with_config(tmp_path, edit):
    path = _net().save(tmp_path / "model.npz")
    entries = _entries(path)
    config = json.loads(str(entries["config"]))
    entries["config"] = np.array(edit(config))
    return _write(tmp_path / "bad.npz", entries)


def test_malformed_configs_raise_model_file_errors_naming_the_file(tmp_path):
    def listed_activation(c):
        c["layers"][0]["activation"] = ["tanh"]  # before: TypeError: unhashable type
        return json.dumps(c)

    def listed_init(c):
        c["layers"][0]["init"] = {"name": "zeros"}
        return json.dumps(c)

    def deep(c):
        return "[" * 100_000 + "]" * 100_000  # before: RecursionError

    for edit, message in ((listed_activation, "unknown activation"), (listed_init, "unknown init"),
                          (deep, "nested too deeply")):
        path = _with_config(tmp_path, edit)
        with pytest.raises(fn.ModelFileError, match=message) as info:
            fn.NeuralNetwork.load(path)
        assert "bad.npz" in str(info.value)


def _npy_header(dtype, shape):
    """A .npy member's bytes: a header claiming (dtype, shape) and no data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_array_headers_are_checked_before_any_data_is_read(tmp_path):
    """Before: a header claiming 10^12 elements gave MemoryError (3.64 TiB)."""
    path = _net().save(tmp_path / "model.npz")
    big = tmp_path / "big.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(big, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "w0.npy":
                data = _npy_header(np.float32, (10**6, 10**6))
            dst.writestr(item, data)
    with pytest.raises(fn.ModelFileError, match=r"big.npz.*w0 should be float32 \(4, 5\), got float32 "
                                                r"\(1000000, 1000000\)"):
        fn.NeuralNetwork.load(big)
    huge_config = tmp_path / "huge_config.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(huge_config, "w") as dst:
        for item in src.namelist():
            dst.writestr(item, _npy_header("<U100", (10**10,)) if item == "config.npy" else src.read(item))
    with pytest.raises(fn.ModelFileError, match="config should be a JSON string"):
        fn.NeuralNetwork.load(huge_config)


def test_a_text_file_and_an_npy_file_are_named_for_what_they_are(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("just some text\n")
    message = "notes.npz' is not a .npz model file.*starts with b'just'"
    with pytest.raises(fn.ModelFileError, match=message) as info:
        fn.NeuralNetwork.load(text)
    assert "pickle" not in str(info.value)  # before: "holds pickled data"
    npy = tmp_path / "array.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(fn.ModelFileError, match="a single .npy array"):
        fn.NeuralNetwork.load(npy)
    with pytest.raises(fn.ModelFileError, match="missing.npz' cannot be opened"):
        fn.NeuralNetwork.load(tmp_path / "missing.npz")


def test_a_pickled_parameter_is_refused_before_it_is_read(tmp_path):
    path = _net().save(tmp_path / "model.npz")
    entries = _entries(path)
    entries["w0"] = np.array([None, {"a": 1}], dtype=object)
    np.savez(tmp_path / "pickled.npz", **entries)
    with pytest.raises(fn.ModelFileError, match="w0 holds pickled objects"):
        fn.NeuralNetwork.load(tmp_path / "pickled.npz")

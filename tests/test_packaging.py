"""Packaging and the command line: the kernels install as fastnet.kernels, importing
fastnet stays light, the name tables agree with the classes, and the ``fastnet``
command runs (in a subprocess, from a folder outside the repository)."""

import ast
import importlib
import importlib.metadata
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnet
from fastnet import kernels
from fastnet.activations import _BY_NAME as ACTIVATION_CLASSES_BY_NAME

# (not `from fastnet.kernels import numpy`: ruff's isort takes fastnet.kernels for a
# third-party module, since there is no fastnet/kernels folder in the repository)
reference = importlib.import_module("fastnet.kernels.numpy")
REPO = Path(__file__).resolve().parents[1]
SCANNED = ("fastnet", "kernels", "tests", "benchmarks")


def run_python(args, cwd, timeout=180):
    """Run ``python args...`` in ``cwd``; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


# -- the kernels package ---------------------------------------------------------------------

def test_kernels_package_name():
    assert kernels.__name__ == "fastnet.kernels"
    assert fastnet.kernels is kernels
    assert reference.__name__ == "fastnet.kernels.numpy"
    assert Path(kernels.__file__).parent.name == "kernels"


def top_level_kernels_imports(source, filename="<src>"):
    """(line, text) of every import of a top-level ``kernels`` module in ``source``,
    including ``importlib.import_module("kernels...")`` with a literal name."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]
        for name in names:
            if name == "kernels" or name.startswith("kernels."):
                found.append((node.lineno, name))
    return found


@pytest.mark.parametrize(("source", "n_found"), [
    ("import kernels", 1),
    ("import numpy, kernels.numpy as k", 1),
    ("from kernels import ACTIVATIONS", 1),
    ("from kernels.numpy import softmax", 1),
    ("def f():\n    import kernels\n", 1),
    ("import importlib\nimportlib.import_module('kernels.numba')", 1),
    ("from fastnet.kernels import ACTIVATIONS\nimport fastnet.kernels\nfrom . import numpy", 0),
    ("from .kernels import x\nimport kernelsx\nimportlib.import_module(f'fastnet.kernels.{n}')", 0),
])
def test_import_scanner_finds_what_it_should(source, n_found):
    assert len(top_level_kernels_imports(source)) == n_found


def test_no_module_imports_a_top_level_kernels_package():
    files = sorted(p for folder in SCANNED if (REPO / folder).is_dir()
                   for p in (REPO / folder).rglob("*.py"))
    assert len(files) >= 15, files  # the scan really covers the code base
    assert REPO / "kernels" / "numpy" / "dense.py" in files
    assert Path(__file__).resolve() in files
    bad = [f"{p.relative_to(REPO)}:{line}: {name}"
           for p in files for line, name in top_level_kernels_imports(p.read_text(), str(p))]
    assert not bad, "import fastnet.kernels instead of kernels:\n" + "\n".join(bad)


def module_level_imports(modules):
    """{module: the modules of ``modules`` it imports at module level} for
    ``modules``, {dotted name: source}.  ``from p import m`` counts as
    importing the submodule p.m where there is one, else p; imports inside
    functions (deferred on purpose) do not count."""
    graph = {}
    for name, source in modules.items():
        package = name if source.startswith("#package") else name.rpartition(".")[0]
        deps = set()
        for node in ast.parse(source).body:
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
                deps.update(subs)
                if len(subs) < len(node.names):
                    deps.add(base)
        graph[name] = sorted(d for d in deps if d in modules and d != name)
    return graph


def import_cycle(graph):
    """One cycle of ``graph`` as a list of names (first == last), or None."""
    state, path = {}, []

    def visit(u):
        state[u] = "open"
        path.append(u)
        for v in graph[u]:
            if state.get(v) == "open":
                return path[path.index(v):] + [v]
            if v not in state and (found := visit(v)):
                return found
        path.pop()
        state[u] = "done"
        return None

    return next((c for u in graph if u not in state and (c := visit(u))), None)


@pytest.mark.parametrize(("modules", "cyclic"), [
    ({"p.a": "import p.b", "p.b": "from p import a"}, True),
    ({"p.a": "from . import b", "p.b": "from .a import f"}, True),
    ({"p.a": "from p.b import g", "p.b": "from p import c", "p.c": "import p.a"}, True),
    ({"p.a": "import p.b", "p.b": "def f():\n    import p.a\n"}, False),  # deferred
    ({"p": "#package\nfrom p.a import f", "p.a": "import numpy"}, False),
])
def test_import_cycle_scanner_finds_what_it_should(modules, cyclic):
    assert (import_cycle(module_level_imports(modules)) is not None) == cyclic


def test_fastnet_modules_import_one_another_without_cycles():
    """At module level, no two of fastnet's modules import each other, even
    through others (``network`` and ``serialization``, ``network`` and
    ``training``): each can be read, imported and tested after the ones it
    needs.  Imports deferred into functions are allowed."""
    modules = {}
    for path in (REPO / "fastnet").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if package else parts)
        modules[name] = ("#package\n" if package else "") + path.read_text()
    graph = module_level_imports(modules)
    assert {"fastnet.network", "fastnet.training.steps", "fastnet.serialization"} <= set(graph)
    assert "fastnet.training" in graph["fastnet.network"]  # the scan sees the imports
    assert import_cycle(graph) is None, " -> ".join(import_cycle(graph))


HEAVY = ("numba", "llvmlite", "matplotlib", "sklearn")

_IMPORT_PROBE = """
import json, sys
heavy = {heavy!r}
def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in heavy + ("kernels",))
import fastnet
after_import = loaded()
import numpy as np
net = fastnet.NeuralNetwork(
    [fastnet.DenseLayer("relu", 3, neurons_num=4, rng=0, backend="numpy"),
     fastnet.DenseLayer("identity", neurons_num=2, rng=1, backend="numpy")],
    loss="softmax_xent", optimizer=fastnet.Adam(0.01), backend="numpy")
net.fit(np.ones((8, 3), np.float32), np.arange(8) % 2, epochs=2, batch_size=4, progress=False)
net.predict(np.ones((2, 3), np.float32))
print(json.dumps({{"after_import": after_import, "after_numpy_training": loaded()}}))
"""


def test_import_fastnet_stays_light(tmp_path):
    """Neither ``import fastnet`` nor training on the NumPy backend imports numba,
    matplotlib or scikit-learn (or a top-level ``kernels``)."""
    proc = run_python(["-c", _IMPORT_PROBE.format(heavy=HEAVY)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == {"after_import": [], "after_numpy_training": []}


def test_probe_detects_heavy_imports(tmp_path):
    """The probe above is able to see a heavy module when one is imported."""
    probe = _IMPORT_PROBE.format(heavy=HEAVY).replace("import fastnet\n", "import fastnet, sklearn\n", 1)
    proc = run_python(["-c", probe], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "sklearn" in json.loads(proc.stdout.strip().splitlines()[-1])["after_import"]


# -- name tables -------------------------------------------------------------------------------

def _named_subclasses(cls):
    out, todo = [], [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("fastnet.") and sub.name is not None:
                out.append(sub)
    return out


def test_activation_table_matches_the_classes():
    table = kernels.ACTIVATIONS
    classes = _named_subclasses(fastnet.Activation)
    assert sorted(c.name for c in classes) == sorted(table)
    assert len(set(table)) == len(table)
    assert set(ACTIVATION_CLASSES_BY_NAME) == set(table)
    for cls in classes:
        act = cls()
        assert act.code == table.index(cls.name) == kernels.ACTIVATION_CODES[cls.name]
        assert type(fastnet.get_activation(cls.name)) is cls
        # the reference module's own constant for the code agrees with the table
        assert getattr(kernels, cls.name.upper()) == act.code


def test_loss_table_matches_the_classes():
    table = kernels.LOSSES
    classes = _named_subclasses(fastnet.Loss)
    assert sorted(c.name for c in classes) == sorted(table)
    assert len(set(table)) == len(table)
    for cls in classes:
        assert cls().code == table.index(cls.name) == kernels.LOSS_CODES[cls.name]
        assert getattr(kernels, cls.name.upper()) == cls().code


def test_reference_kernels_cover_exactly_the_tables():
    a = np.linspace(-2, 2, 12).reshape(3, 4)
    for code in range(len(kernels.ACTIVATIONS)):
        y = reference.activation_forward(code, 0.1, a, np.empty_like(a))
        assert y.shape == a.shape and np.isfinite(y).all()
    with pytest.raises(ValueError, match="unknown activation code 8"):
        reference.activation_forward(len(kernels.ACTIVATIONS), 0.1, a, np.empty_like(a))
    t = np.eye(4)[[0, 1, 2]]
    for code in range(len(kernels.LOSSES)):
        assert np.isfinite(reference.loss_value(code, a, t))
    with pytest.raises(ValueError, match="unknown loss code 3"):
        reference.loss_value(len(kernels.LOSSES), a, t)


def test_every_public_reference_kernel_has_a_docstring():
    functions = {name: getattr(reference, name) for name in reference.__all__}
    assert {"dense_forward", "dense_backward", "loss_value", "sgd_step", "adam_step"} <= set(functions)
    missing = sorted(name for name, f in functions.items() if len((inspect.getdoc(f) or "").strip()) < 20)
    assert not missing, f"kernels without a docstring: {missing}"


# -- distribution metadata ---------------------------------------------------------------------

def test_distribution_metadata():
    dist = importlib.metadata.distribution("fastnet-dense")
    assert dist.version == fastnet.__version__
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts.get("fastnet") == "fastnet.cli:main"


# -- the command line ---------------------------------------------------------------------------

def test_cli_info(tmp_path):
    proc = run_python(["-m", "fastnet", "info"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert re.search(rf"^fastnet {re.escape(fastnet.__version__)}  python {sys.version_info.major}"
                     rf"\.{sys.version_info.minor}\.\d+  numpy {re.escape(np.__version__)}  numba ", out,
                     re.M), out
    assert re.search(r"^blas: \w+ [\d.]+, \d+ threads", out, re.M), out
    assert re.search(r"^threads: .* now \d+$", out, re.M), out
    if "numba" in fastnet.available_backends():
        assert re.search(r"^JIT cache: \d+ compiled kernels in ", out, re.M), out
    found = re.search(r"backends available: ([\w, ]+); default: (\w+) -> (\w+)", out)
    assert found, out
    available = found[1].split(", ")
    assert "numpy" in available
    assert set(available) <= {"numpy", "numba"}
    assert found[2] in ("auto", "numpy", "numba")
    assert found[3] in available


def test_cli_demo_trains(tmp_path):
    proc = run_python(["-m", "fastnet", "demo", "--epochs", "2", "--no-progress"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "fit:" not in proc.stderr  # --no-progress: no progress bar
    out = proc.stdout
    assert re.search(r"NeuralNetwork\(64-128-128-10, loss=SoftmaxCrossEntropy\(\)", out), out
    epochs = re.findall(r"^epoch\s+(\d+): loss (\d+\.\d+)", out, re.M)
    assert [int(e) for e, _ in epochs] == [1, 2]
    assert float(epochs[1][1]) < float(epochs[0][1])  # the loss went down
    accuracy = re.search(r"test accuracy (\d\.\d+); fit took [\d.]+ s on the (numpy|numba) backend", out)
    assert accuracy, out
    assert float(accuracy[1]) > 0.8  # about 0.95 after two epochs; chance is 0.1


@pytest.mark.parametrize(("args", "message"), [
    (["bogus"], r"usage: fastnet .*\n.*fastnet: error: argument command: invalid choice: 'bogus'"),
    ([], r"usage: fastnet .*\n.*fastnet: error: the following arguments are required: command"),
    (["info", "--bogus"], r"usage: fastnet info .*\nfastnet info: error: unrecognized arguments: --bogus"),
    (["--bogus", "info"], r"usage: fastnet .*\nfastnet: error: unrecognized arguments: --bogus"),
    (["profile", "--widths", "0"], r"usage: fastnet profile .*\nfastnet profile: error: argument --widths"),
    (["demo", "--epochs", "0"],
     r"usage: fastnet demo .*fastnet demo: error: argument --epochs: must be a positive integer, got 0"),
    (["demo", "--batch-size", "x"], r"usage: fastnet demo .*error: argument --batch-size: invalid .* 'x'"),
])
def test_cli_usage_errors(tmp_path, args, message):
    proc = run_python(["-m", "fastnet", *args], cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert re.search(message, proc.stderr, re.S), proc.stderr
    assert proc.stdout == ""


def test_readme_api_example_runs_and_round_trips(tmp_path):
    """The README's example, as written, trains, saves and loads."""
    pytest.importorskip("sklearn")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"## The API in one example\n\n```python\n(.*?)```", readme, re.S)
    assert block, "the README lost its example"
    code = block[1] + (
        "\nassert np.array_equal(same.predict(X[test]), net.predict(X[test]))"
        "\nprint('ACCURACY', net.evaluate(X[test], y[test])['accuracy'])\n"
    )
    (tmp_path / "example.py").write_text(code)
    proc = run_python(["example.py"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    accuracy = float(re.search(r"ACCURACY ([\d.]+)", proc.stdout)[1])
    assert accuracy >= 0.97, proc.stdout
    assert (tmp_path / "digits.npz").exists()

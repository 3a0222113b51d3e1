"""Tampered state never reaches the kernels: each case of tests/tamper_cases.py
on each training path and both backends raises the same exception with a
clear message and changes nothing.  The cases run in one subprocess per
backend, so one that corrupted memory fails its test instead of the run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastnet as fn

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from tamper_cases import CASES, ONLY, PATHS  # noqa: E402

BACKENDS = fn.available_backends()
_RUNS = {}


def _outcomes(backend):
    """{(case, path): outcome} from one run of tamper_cases.py; a case that
    killed the process is recorded as "crashed", with the process's end."""
    if backend not in _RUNS:
        proc = subprocess.run([sys.executable, str(HERE / "tamper_cases.py"), backend],
                              capture_output=True, text=True, timeout=600)
        found, started = {}, None
        for line in proc.stdout.splitlines():
            row = json.loads(line)
            if "start" in row:
                started = tuple(row["start"])
            else:
                found[row["case"], row["path"]] = row
                started = None
        if started is not None:
            found[started] = {"crashed": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
        _RUNS[backend] = (found, proc)
    return _RUNS[backend]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("case", "path"), [(c, p) for c in CASES for p in PATHS if p in ONLY.get(c, PATHS)])
def test_tampered_state_is_refused_and_changes_nothing(backend, case, path):
    found, proc = _outcomes(backend)
    outcome = found.get((case, path))
    assert outcome is not None, f"the case never ran: exit {proc.returncode}, {proc.stderr[-2000:]}"
    assert "crashed" not in outcome, outcome["crashed"]
    _, exc, message = CASES[case]
    assert outcome["raised"] == exc.__name__, outcome
    assert re.search(message, outcome["message"]), outcome["message"]
    assert outcome["unchanged"], "a refused step changed parameters or optimizer state"


def test_the_paths_are_those_named():
    """The cases cover what they say: on numba each setting takes its path."""
    if "numba" not in BACKENDS:
        pytest.skip("numba is not installed")
    found, _ = _outcomes("numba")
    taken = {path: row["taken"] for (_, path), row in found.items() if "taken" in row}
    assert taken == {"fused": "fused", "fused-blas": "fused", "fused-blas-nesterov": "fused",
                     "fused-adam": "fused", "fused-blas-adam": "fused", "keep-grads": "layered",
                     "keep-grads-adam": "layered", "fit-momentum": "fused", "fit-adam": "fused"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_cases_ran_to_a_clean_exit(backend):
    """Memory corrupted by a case may only show when the process exits."""
    _, proc = _outcomes(backend)
    assert proc.returncode == 0, proc.stderr[-2000:]

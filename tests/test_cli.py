"""The ``fastnet`` command's conventions, through a subprocess: --version, help
with defaults and no markup, each subcommand's usage on its errors, exit
statuses, one line for a failure, and what ``fastnet profile`` does with a bad
--out, no matplotlib, a width too large for memory and Ctrl-C."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import fastnet


def fastnet_cmd(*args, code=None, timeout=300, **kw):
    """Run ``python -m fastnet ARGS`` (or ``code`` with ARGS as sys.argv[1:])."""
    cmd = [sys.executable, "-m", "fastnet", *args] if code is None else [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def test_version():
    proc = fastnet_cmd("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"fastnet {fastnet.__version__}"


@pytest.mark.parametrize("command", [None, "profile", "info", "history", "demo"])
def test_help_shows_every_option_with_text_and_no_markup(command):
    proc = fastnet_cmd(*([command] if command else []), "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "``" not in out and ":func:" not in out
    assert out.startswith(f"usage: fastnet{' ' + command if command else ''} ")
    options = re.findall(r"^  (--[\w-]+)(.*)$", out, re.M)
    assert options, out
    body = out.split("options:", 1)[1]
    for name, _ in options:
        # the text after each option: its own help (a blank help would run into the next option)
        text = re.search(rf"^  {re.escape(name)}[^\n]*?(?:  +(\S.*))?$((?:\n {{10,}}\S.*)*)", body, re.M)
        assert text and (text[1] or text[2].strip()), f"{command}: {name} has no help text"
    if command in ("profile", "history", "demo"):  # commands with valued options show their defaults
        assert "(default: " in out


def test_info_usage_error_shows_infos_usage():
    proc = fastnet_cmd("info", "--bogus")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("usage: fastnet info ")
    assert proc.stderr.strip().endswith("fastnet info: error: unrecognized arguments: --bogus")


_FAILING = """
import sys
import fastnet.cli as cli
def boom(argv):
    raise RuntimeError("the disk is on fire")
cli.RUNNERS["info"] = boom
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_failure_is_one_line_on_stderr_with_status_1():
    proc = fastnet_cmd("info", code=_FAILING)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == "fastnet info: error: RuntimeError: the disk is on fire\n"


def test_debug_shows_the_traceback():
    proc = fastnet_cmd("--debug", "info", code=_FAILING)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "the disk is on fire" in proc.stderr


# -- fastnet profile ------------------------------------------------------------------------------
def test_profile_refuses_an_unwritable_out_before_measuring(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out in (blocker, blocker / "below"):
        start = time.perf_counter()
        proc = fastnet_cmd("profile", "--quick", "--out", str(out))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "argument --out: cannot write into" in proc.stderr
        assert time.perf_counter() - start < 20  # refused at once, not after a sweep (~15 s)
    assert blocker.read_text() == "x"


def test_profile_creates_a_missing_out_folder(tmp_path):
    out = tmp_path / "new" / "deeper"
    proc = fastnet_cmd("profile", "--widths", "16", "--batches", "4", "--no-progress", "--no-plot",
                       "--backends", "numpy", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "profile.json").exists() and (out / "profile.csv").exists()


def test_profile_refuses_a_width_too_large_for_memory(tmp_path):
    proc = fastnet_cmd("profile", "--widths", "300000", "--out", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(r"width 300000, batch 4096\) needs about [\d.]+ GiB; [\d.]+ GiB is available",
                     proc.stderr), proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_point_bytes_counts_the_arrays_of_a_point():
    from fastnet.profiler import point_bytes

    # 2 backends, float32, n = 1000, B = 100: 6 n^2 + 22 B n floats, and one float64 n x n draw
    assert point_bytes(1000, 100, "float32", 2) == 4 * (6 * 10**6 + 22 * 10**5) + 8 * 10**6


def test_profile_without_matplotlib_still_writes_table_json_csv(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"  # import matplotlib now fails
            "from fastnet.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = fastnet_cmd("profile", "--widths", "16", "--batches", "4", "--no-progress", "--backends", "numpy",
                       "--out", str(tmp_path), code=code)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "pip install 'fastnet-dense[plot]'" in proc.stderr
    assert (tmp_path / "profile.json").exists() and (tmp_path / "profile.csv").exists()
    assert not (tmp_path / "profile.png").exists()
    assert "GEMM peak" in proc.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_profile_ctrl_c_writes_what_was_measured(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "fastnet", "profile", "--widths", "64",
                             "--backends", "numpy", "--batches", ",".join(["8"] * 200), "--no-progress",
                             "--no-plot", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    json_path = tmp_path / "profile.json"
    # the sweep of 200 points takes about a minute; after 10 s some are measured (start-up
    # and the GEMM peak take 1-3 s)
    time.sleep(10)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line]
    assert re.fullmatch(r"fastnet profile: interrupted; wrote the \d+ rows measured so far", lines[-1]), err
    data = json.loads(json_path.read_text())
    assert data["interrupted"] is True
    n = int(re.search(r"wrote the (\d+) rows", lines[-1])[1])
    assert n == len(data["rows"]) and n < 200 * 3


def test_profile_interrupted_before_any_point_says_so(tmp_path):
    code = ("import sys, fastnet.profiler as p\n"
            "def stop(*a, **k):\n    raise KeyboardInterrupt\n"
            "p.gemm_peak = stop\n"
            "from fastnet.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = fastnet_cmd("profile", "--widths", "16", "--batches", "4", "--out", str(tmp_path), code=code,
                       env=dict(os.environ))
    assert proc.returncode == 130 and proc.stderr == "fastnet profile: interrupted\n"

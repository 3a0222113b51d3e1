"""The JIT kernels ask LLVM for 512-bit vectors on the CPUs listed in
``kernels/_numba.py`` (``WIDE_VECTORS``), and keep LLVM's own choice elsewhere.

The kernels are compiled afresh here (numba cannot show the machine code of a
kernel loaded from its cache), and their multiply-adds are counted by
register width in the assembly.
"""

import re

import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit  # noqa: E402
from numba.core import config  # noqa: E402

from fastnet.kernels import _numba as J  # noqa: E402

pytestmark = pytest.mark.skipif(config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT: nothing is compiled")


def _fma_counts(monkeypatch, wide):
    """Fresh compile of the forward loops (register tiles and sweeping loops) with
    WIDE_VECTORS = wide, and the tiles' vector width to match: {"zmm": n, "ymm": n}."""
    monkeypatch.setattr(J, "WIDE_VECTORS", wide)
    monkeypatch.setattr(J, "_VEC_BYTES", 64 if wide else 32)
    kernel = njit(fastmath={"contract"})(J._forward_loops.py_func)
    x = np.ones((6, 40), np.float32)  # four rows by tiles, two by the sweeping loops
    w = np.ones((40, 300), np.float32)
    a, y = np.empty((6, 300), np.float32), np.empty((6, 300), np.float32)
    kernel(x, w, np.zeros((1, 300), np.float32), 0, np.float32(0), J._consts(x), a, y)
    np.testing.assert_array_equal(a, 40.0)  # sums of 40 ones: exact at any width
    asm = next(iter(kernel.inspect_asm().values()))
    return {reg: len(re.findall(rf"vfmadd\w*\s[^\n]*{reg}", asm)) for reg in ("zmm", "ymm")}


def test_the_choice_follows_numbas_cpu_name():
    from numba.core.registry import cpu_target

    assert J._host_cpu_name() == cpu_target.target_context.codegen()._get_host_cpu_name()
    assert J.WIDE_VECTORS == (J._host_cpu_name() in J._WIDE_VECTOR_CPUS)


wide_cpus_only = pytest.mark.skipif(
    not J.WIDE_VECTORS, reason="a CPU where LLVM's own choice is kept (it may or may not be 512-bit)")


@wide_cpus_only
def test_without_the_hint_no_512_bit_multiply_adds(monkeypatch):
    """The premise: on these CPUs LLVM alone keeps to 256-bit vectors."""
    assert _fma_counts(monkeypatch, False)["zmm"] == 0


@wide_cpus_only
def test_with_the_hint_the_loops_use_512_bit_multiply_adds(monkeypatch):
    counts = _fma_counts(monkeypatch, True)
    assert counts["zmm"] > counts["ymm"]

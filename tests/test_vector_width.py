"""The JIT kernels ask LLVM for 512-bit vectors on the CPUs listed in
``fastnet.kernels.numba.cpu`` (``WIDE_VECTORS``), and keep LLVM's own choice elsewhere.

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

from fastnet.kernels.numba import cpu, dense  # noqa: E402

pytestmark = pytest.mark.skipif(config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT: nothing is compiled")


def _fma_counts(monkeypatch, wide):
    """Fresh compile of the forward pass's sweeping loops with WIDE_VECTORS = wide:
    {"zmm": n, "ymm": n}.  (The register tiles set their width themselves, by
    ``cpu.VEC_BYTES``; the hint is for the loops that LLVM vectorises.)"""
    monkeypatch.setattr(cpu, "WIDE_VECTORS", wide)
    # the loops' Python function, compiled afresh here (not cached) under the hint
    kernel = njit(fastmath={"contract"})(dense.FORWARD_ROWS[1].py_func)

    x, w = np.ones((3, 40), np.float32), np.ones((40, 300), np.float32)  # 3 rows: a pair and one
    a, b = np.zeros((3, 300), np.float32), np.zeros((1, 300), np.float32)
    kernel(x, w, b, a)
    np.testing.assert_array_equal(a, 40.0)  # sums of 40 ones: exact at any width
    asm = next(iter(kernel.inspect_asm().values()))
    return {reg: len(re.findall(rf"vfmadd\w*\s[^\n]*{reg}", asm)) for reg in ("zmm", "ymm")}


def test_the_choice_follows_numbas_cpu_name():
    from numba.core.registry import cpu_target

    assert cpu.host_cpu_name() == cpu_target.target_context.codegen()._get_host_cpu_name()
    assert cpu.WIDE_VECTORS == (cpu.host_cpu_name() in cpu.WIDE_VECTOR_CPUS)


wide_cpus_only = pytest.mark.skipif(
    not cpu.WIDE_VECTORS, reason="a CPU where LLVM's own choice is kept (it may or may not be 512-bit)")


@wide_cpus_only
def test_without_the_hint_no_512_bit_multiply_adds(monkeypatch):
    """The premise: on these CPUs LLVM alone keeps to 256-bit vectors."""
    assert _fma_counts(monkeypatch, False)["zmm"] == 0


@wide_cpus_only
def test_with_the_hint_the_loops_use_512_bit_multiply_adds(monkeypatch):
    counts = _fma_counts(monkeypatch, True)
    assert counts["zmm"] > counts["ymm"]

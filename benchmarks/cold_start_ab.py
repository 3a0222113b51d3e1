"""Cold start against another commit: alternating pairs of new processes, each cold.

    python benchmarks/cold_start_ab.py --baseline REV [--cases fused-1,fused-16,fused-32-adam] [--pairs 4]

Each case is one of ``fastnet.info.FIRST_RESULT_CASES``.  A pair runs the case once on this checkout and
once on ``REV`` (its ``fastnet/`` and ``kernels/``, written once to
``$TMPDIR/fastnet-cold-baselines/<sha>/`` as an importable ``fastnet``), each
in a new process with an empty ``NUMBA_CACHE_DIR`` (``first_result``), in
alternating order.  Printed per pair: the whole process and, in brackets, the
first call alone, seconds; per case: the median of new over old for the whole
process (and its range), and the medians of both.  One timing job at a time.
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import REPO, _git  # noqa: E402

from fastnet.info import FIRST_RESULT_CASES, environment, first_result  # noqa: E402

# put the baseline's fastnet first, and drop the editable install's finders that map
# ``fastnet`` to this checkout; the helper processes it starts import the same tree
_USE_TREE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, {root!r})
"""


def baseline_tree(rev):
    """The directory holding ``fastnet`` as of ``rev`` (its kernels as ``fastnet/kernels``)."""
    sha = _git("rev-parse", "--short=10", rev).decode().strip()
    root = Path(tempfile.gettempdir()) / "fastnet-cold-baselines" / sha
    if not (root / "complete").exists():  # written last: a copy cut short is made again
        for path in _git("ls-tree", "-r", "--name-only", sha, "--", "fastnet", "kernels").decode().split():
            dest = root / (path if path.startswith("fastnet/") else "fastnet/" + path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(_git("show", f"{sha}:{path}"))
        (root / "complete").write_text(sha + "\n")
    return root, sha


def run(code):
    with tempfile.TemporaryDirectory(prefix="fastnet-cold-ab-") as cache:
        return first_result(code, cache)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare with")
    parser.add_argument("--cases", default="fused-1,fused-16,fused-32-adam,fused-64", help="comma-separated")
    parser.add_argument("--pairs", type=int, default=4)
    args = parser.parse_args(argv)
    root, sha = baseline_tree(args.baseline)
    # the processes start in a folder with no fastnet of its own: before b8b5f51 a helper
    # imported the fastnet of its working directory first (this checkout, for a baseline)
    os.chdir(tempfile.gettempdir())
    print(f"baseline {args.baseline} ({sha}) from {REPO}; {environment()['cpu']}")
    unknown = [case for case in args.cases.split(",") if case not in FIRST_RESULT_CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(FIRST_RESULT_CASES)}")
    for case in args.cases.split(","):
        code = FIRST_RESULT_CASES[case]
        codes = {"base": _USE_TREE.format(root=str(root)) + code, "new": code}
        rows = []
        for p in range(args.pairs):
            order = ("base", "new") if p % 2 == 0 else ("new", "base")
            rep = {which: run(codes[which]) for which in order}
            rows.append(rep)
            print(f"{case} pair {p}: base {rep['base']['process']:.2f} ({rep['base']['call']:.2f})  "
                  f"new {rep['new']['process']:.2f} ({rep['new']['call']:.2f})", flush=True)
        ratio = [r["new"]["process"] / r["base"]["process"] for r in rows]
        med = {(which, key): statistics.median(r[which][key] for r in rows)
               for which in ("base", "new") for key in ("process", "call")}
        print(f"{case}: whole process new/base {statistics.median(ratio):.3f} ({min(ratio):.3f}-"
              f"{max(ratio):.3f}); medians base {med['base', 'process']:.2f} s "
              f"(call {med['base', 'call']:.2f}), new {med['new', 'process']:.2f} s "
              f"(call {med['new', 'call']:.2f})", flush=True)


if __name__ == "__main__":
    main()

"""Where a cold JIT compile goes: seconds per compiled kernel, and per LLVM stage.

    python benchmarks/compile_profile.py [CASE] [--top 25] [--llvm]

CASE is one of ``fastnet.info.FIRST_RESULT_CASES`` (default ``fused-1``).  It
runs in a new process with an empty ``NUMBA_CACHE_DIR``, with numba's
``numba:compile`` events recorded: for each kernel signature compiled, the
seconds of its compile without the kernels it compiled on the way (the column
sums to the whole compile), slowest first.  ``--llvm`` also sets
``NUMBA_LLVM_PASS_TIMINGS=1`` and adds LLVM's own timers (``get_metadata(sig)
["llvm_pass_timings"]``): per kernel, per stage (the function passes, the
module passes run once a kernel's callees are linked into it, and the machine
code: "Finalize object"), the slowest LLVM passes, and numba's compiler passes.
"""

import argparse
import tempfile

from fastnet.info import FIRST_RESULT_CASES, first_result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", nargs="?", default="fused-1", choices=list(FIRST_RESULT_CASES))
    parser.add_argument("--top", type=int, default=25, help="kernels to list")
    parser.add_argument("--llvm", action="store_true", help="LLVM's and numba's pass timers as well")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fastnet-compile-") as cache:
        rep = first_result(FIRST_RESULT_CASES[args.case], cache, kernels=True, llvm=args.llvm)
    rows = sorted(rep["kernels"].items(), key=lambda kv: -kv[1])
    llvm = rep.get("llvm", {})
    print(f"{args.case}: first result {rep['call']:.2f} s (whole process {rep['process']:.2f} s), "
          f"compiling {sum(s for _, s in rows):.2f} s in {len(rows)} kernels")
    print(f"{'self s':>7s} {'llvm s' if args.llvm else '':>7s}  kernel[dtype]")
    for name, seconds in rows[:args.top]:
        print(f"{seconds:7.2f} {f'{llvm.get(name, 0.0):7.2f}' if args.llvm else '':>7s}  {name}")
    if len(rows) > args.top:
        print(f"{sum(s for _, s in rows[args.top:]):7.2f} {'':7s}  ... {len(rows) - args.top} more")
    if args.llvm:
        print("\nLLVM stages, summed over every kernel:")
        for stage, seconds in sorted(rep["stages"].items(), key=lambda kv: -kv[1]):
            print(f"{seconds:7.2f}  {stage}")
        print("\nslowest LLVM passes:")
        for name, seconds in rep["passes"]:
            print(f"{seconds:7.2f}  {name}")
        print("\nnumba's compiler passes, summed over every kernel (native_lowering includes LLVM):")
        for name, seconds in rep["numba_passes"]:
            print(f"{seconds:7.2f}  {name}")


if __name__ == "__main__":
    main()

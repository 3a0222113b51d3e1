"""The ``fastnet`` command: ``fastnet profile``, ``fastnet info`` and ``fastnet demo``."""

import argparse
import sys


def _info(args):
    from fastnet.info import print_info

    print_info(with_compile_times=args.compile_times)
    return 0


def _profile(args):
    from fastnet.profiler import main as profile_main

    return profile_main(args.rest)


def _demo(args):
    from fastnet.examples import digits

    return digits.run(args.rest)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastnet", description="fastnet command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("profile", help="batch-size scaling profile against the roofline (see --help)",
                   add_help=False).set_defaults(func=_profile)
    sub.add_parser("demo", help="train on the digits data set (needs scikit-learn)",
                   add_help=False).set_defaults(func=_demo)
    info = sub.add_parser("info", help="backends, versions, BLAS, threads and the JIT cache")
    info.add_argument("--compile-times", action="store_true",
                      help="measure the JIT compile time per path and per kernel, cold and warm")
    info.set_defaults(func=_info)
    args, rest = parser.parse_known_args(argv)
    if rest and args.func not in (_demo, _profile):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The ``fastnet`` command: ``fastnet demo`` and ``fastnet info``."""

import argparse
import platform
import sys


def _info(_args):
    import numpy as np
    from threadpoolctl import threadpool_info

    import fastnet

    print(f"fastnet {fastnet.__version__}, numpy {np.__version__}, python {platform.python_version()}")
    print(f"backends available: {', '.join(fastnet.available_backends())}; "
          f"default: {fastnet.get_default_backend()} -> {fastnet.resolve_backend(None)}")
    for pool in threadpool_info():
        print(f"{pool.get('user_api')}: {pool.get('internal_api')} {pool.get('version')}, "
              f"{pool.get('num_threads')} threads ({pool.get('filepath')})")
    return 0


def _demo(args):
    from fastnet.examples import digits

    return digits.main(args.rest)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastnet", description="fastnet command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="train on the digits data set (needs scikit-learn)",
                   add_help=False).set_defaults(func=_demo)
    sub.add_parser("info", help="backends, BLAS and thread settings").set_defaults(func=_info)
    args, rest = parser.parse_known_args(argv)
    if rest and args.func is not _demo:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

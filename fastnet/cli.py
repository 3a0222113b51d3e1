"""The ``fastnet`` command: ``fastnet profile``, ``info``, ``history`` and ``demo``.

Conventions, for every subcommand: ``fastnet COMMAND --help`` lists its options
with their defaults; a usage error prints that subcommand's usage and the
error on stderr and exits 2; a failure prints one line, ``fastnet COMMAND:
error: ...``, on stderr and exits 1 (``fastnet --debug COMMAND`` shows the
traceback instead); Ctrl-C prints one line and exits 130.
"""

import argparse
import importlib
import sys

#: name -> one-line description
COMMANDS = {
    "profile": "how a dense layer's speed scales with the batch size, against the machine's GEMM limit",
    "info": "backends, versions, BLAS, threads and the JIT cache in use",
    "history": "the saved asv results as PNGs and an offline HTML page (needs asv and matplotlib)",
    "demo": "train on the handwritten digits that ship with scikit-learn (needs scikit-learn)",
}


def _lazy(module, func="main"):
    """A runner that imports ``module`` only when its command is used."""
    def run(argv):
        return getattr(importlib.import_module(module), func)(argv)
    return run


RUNNERS = {"profile": _lazy("fastnet.profiler"), "info": _lazy("fastnet.info"),
           "history": _lazy("fastnet.history"), "demo": _lazy("fastnet.examples.digits", "run")}


def main(argv=None):
    import fastnet

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="fastnet", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="fastnet: fully-connected neural networks for the CPU.",
        epilog="commands:\n" + "\n".join(f"  {name:9s}{text}" for name, text in COMMANDS.items())
               + "\n\n'fastnet COMMAND --help' shows a command's options.")
    parser.add_argument("--version", action="version", version=f"fastnet {fastnet.__version__}")
    parser.add_argument("--debug", action="store_true", help="show a failure's traceback (default: one line)")
    parser.add_argument("command", choices=list(COMMANDS), metavar="command",
                        help=f"one of {', '.join(COMMANDS)}, followed by its own options")
    # the options before the command are fastnet's, everything after it the command's own
    # (so that 'fastnet profile --help' is the profiler's help)
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    ns = parser.parse_args(argv[:at + 1])
    rest = argv[at + 1:]
    try:
        return RUNNERS[ns.command](rest)
    except KeyboardInterrupt:
        print(f"fastnet {ns.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a failure, not a usage error (those exit 2 in argparse)
        if ns.debug:
            raise
        print(f"fastnet {ns.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

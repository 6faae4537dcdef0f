"""The memops command line: `memops COMMAND ...`, or `python -m memops COMMAND ...`.

    memops check [--device cpu|cuda] [--backend NAME ...] [--dtype float32 float64]
    memops train TASK [--out DIR] [--steps N] [--resume] ...
    memops eval CHECKPOINT [--length L ...]
    memops plot CHECKPOINT [--out PNG]

Each command is a module holding
    HELP                  one line for `memops --help`,
    add_arguments(parser) its options, on its own argparse subparser,
    run(args) -> int      the work, returning the exit code (0 ok, 1 a check failed, 2 cannot run).
A new command (train, eval, plot, ...) is one more line in COMMANDS; its module is imported only
when that command runs or when the parser is built, so keep heavy imports inside run().
"""

import argparse
import importlib
import sys

from .checkpoints import CheckpointError

# command name -> module: `check` belongs to the op library, the others to the application
COMMANDS = {
    "check": "memops.check",
    "train": "memops.app.train",
    "eval": "memops.app.evaluate",
    "plot": "memops.app.plot",
}


def _module(name):
    return importlib.import_module(COMMANDS[name])


def build_parser():
    parser = argparse.ArgumentParser(
        prog="memops",
        description="memops: fused memory-addressing ops for memory-augmented networks.",
    )
    parser.add_argument("--version", action="store_true", help="print the memops version and build, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _module(name)
        cmd = sub.add_parser(name, help=module.HELP, description=(module.__doc__ or module.HELP).strip(),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def given_options(name, argv):
    """The destinations of the options the command line of command `name` gives explicitly (so that a
    resumed run can tell an option given again from its default)."""
    parser = argparse.ArgumentParser(add_help=False)
    _module(name).add_arguments(parser)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    given, _ = parser.parse_known_args(argv[argv.index(name) + 1:])
    return set(vars(given))


def main(argv=None):
    """Parse `argv` (default sys.argv[1:]), run the command, return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has already printed
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.version:
        import memops

        print(f"memops {memops.__version__} {memops.build_info()}")
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    args._given = given_options(args.command, argv)
    try:
        return int(args._run(args) or 0)
    except CheckpointError as e:
        print(e, file=sys.stderr)
        return 2


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError)


def console():
    """The `memops` console script and `python -m memops`: main(), with a user's mistake (a bad option
    value, a malformed or missing file) printed as one line instead of a traceback (MEMOPS_TRACEBACK=1
    shows it)."""
    import os

    try:
        code = main()
    except USER_ERRORS as e:
        if os.environ.get("MEMOPS_TRACEBACK", "0") not in ("", "0"):
            raise
        message = str(e) if str(e).startswith("memops") else f"memops: {e}"
        print(message, file=sys.stderr)
        code = 2
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # a torchrun rank, its work done and its files closed: leave without the interpreter's teardown,
        # where gloo's threads could still be torn down and a rank aborted now and then ("terminate
        # called without an active exception"), failing the run after it had finished
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    return code

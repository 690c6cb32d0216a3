"""The ``mitp`` command line.

Each sub-command is a module in ``mitp/app/commands/`` named as the command, with ``HELP`` (and
optionally ``DESCRIPTION``), ``add_arguments(parser)`` and ``run(args) -> int``; modules are
discovered, so a new command touches one file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from mitp import __version__
from mitp.errors import MitpError

from . import commands
from .errors import UserError

INTERRUPTED = 128 + 2  # the shell's status for a process ended by SIGINT


class _Parser(argparse.ArgumentParser):
    """Usage errors become UserError (exit 2 from main, with the usage), not SystemExit inside it."""

    def error(self, message):
        self.print_usage(sys.stderr)
        raise UserError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mitp", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mitp {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            command = importlib.import_module(f"{commands.__name__}.{info.name}")
            p = subparsers.add_parser(
                info.name, help=command.HELP, description=getattr(command, "DESCRIPTION", command.HELP)
            )
            command.add_arguments(p)
            p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.argv = argv  # the command as given, for the records of a run
    try:
        return int(args.func(args) or 0)
    except (UserError, MitpError) as err:  # config keys, manifest lines, checkpoints, backbone specs
        print(f"mitp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError) as err:
        # a path the user gave that the system refuses (no permission, a file where a folder must be): one line
        where = f": {err.filename}" if err.filename else ""
        print(f"mitp {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the processes a command started are stopped on the way out (app/launch.py)
        print(f"mitp {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

"""The ``mixnas`` command line.

Each sub-command lives in its own module under :mod:`mixnas.launch.commands` with two functions:
``register(subparsers)`` adds its parser (and sets ``func``), and the ``func`` it sets runs it and returns an exit
code. This module owns the terminal contract: a :class:`~mixnas.errors.MixnasError` (bad input) becomes one line
on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any, NoReturn

from mixnas.errors import MixnasError

# Sub-command modules, in the order ``mixnas --help`` lists them. A module that is missing is skipped, so a
# partial install still offers the commands it has.
COMMAND_MODULES = (
    "search",
    "resume",
    "status",
    "report",
    "rerank",
    "export",
    "build",
    "space",
    "train_proxy",
    "train",
    "latency",
    "supernet",
)


class _Formatter(argparse.HelpFormatter):
    """``--help`` states the range of every numeric option (:mod:`mixnas.bounds`), from the range that checks it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        rng = getattr(action.type, "range", None)
        return f"{text} [{rng.describe()}]".strip() if rng is not None else action.help


class _Parser(argparse.ArgumentParser):
    """argparse with the terminal contract: a usage error is one line ``mixnas: error: ...`` and exit code 2.

    Sub-command parsers are made by ``add_subparsers`` with the parent's class, so every sub-command (and every
    action of ``mixnas space`` / ``mixnas latency``) reports this way; ``--help`` still prints the full usage, with
    the range of every numeric option.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        if len(text) > _MAX_USAGE_ERROR:  # e.g. a 5,000-digit "invalid int value"
            text = text[:_MAX_USAGE_ERROR] + "..."
        self.exit(2, f"mixnas: error: {text} (see {self.prog} --help)\n")


_MAX_USAGE_ERROR = 300


def make_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv`` naming a sub-command, only that command's module is imported.

    Some commands need torch (about 3 s to import on a small CPU); ``mixnas status`` or ``mixnas export`` should
    not pay for it. Without a recognisable command (``mixnas --help``, a typo) every command is registered, so the
    listing and the "invalid choice" error are complete.
    """
    parser = _Parser(prog="mixnas", description="Hardware-aware neural architecture search with MixConv.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = _command_module(argv)
    for name in COMMAND_MODULES if wanted is None else (wanted,):
        try:
            module = importlib.import_module(f"mixnas.launch.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mixnas.launch.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def _command_module(argv: list[str] | None) -> str | None:
    """The module of the sub-command ``argv`` names (its first argument that is not an option), if any."""
    for arg in argv or ():
        if arg.startswith("-"):
            continue
        module = arg.replace("-", "_")
        return module if module in COMMAND_MODULES else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = make_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (one line, already printed) or --help: its exit code, not a raise
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except MixnasError as exc:
        print(f"mixnas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mixnas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

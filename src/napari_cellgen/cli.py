"""``cellgen``: the same core as the napari widgets, from the command line.

Each subcommand lives in ``napari_cellgen.commands.<name>`` with ``add_parser(subparsers)``
and ``run(args) -> int``. Errors the user can fix print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ["info", "demo", "segment", "train", "sample", "train-generator", "synth"]


class UserError(Exception):
    """An error caused by the input; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="cellgen",
        description="Mitochondria segmentation, fine-tuning and EM generation (napari-cellgen).",
    )
    parser.add_argument("--version", action="version", version=f"napari-cellgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"napari_cellgen.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:  # a subcommand not built in this checkout
            if exc.name and exc.name.startswith("napari_cellgen.commands"):
                continue
            raise
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("cellgen: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"cellgen {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

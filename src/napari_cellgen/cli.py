"""``cellgen``: the same core as the napari widgets, from the command line.

Each subcommand lives in ``napari_cellgen.commands.<name>`` with ``add_parser(subparsers)``
and ``run(args) -> int``. Errors the user can fix print one clear line and exit 2 (bad
options, inputs, model cards, outputs; a full disk, a read-only folder, too little memory);
anything unexpected prints one line naming a report file that holds the traceback, and exits 1.
SIGTERM ends a command like Ctrl-C (temporary files are removed; exit 143).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import signal
import sys
import threading

SUBCOMMANDS = ["info", "demo", "segment", "train", "sample", "train-generator", "synth", "export"]


class UserError(Exception):
    """An error caused by the input; printed without a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM: unwinds like Ctrl-C, so ``finally`` blocks and temporary folders clean up."""


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it.

    Options without a value (flags), required ones and those whose default is None (the help
    says in words what None means, e.g. "default: the shipped model") are left as written.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or not action.option_strings or action.required
                or any(action.default is v for v in (None, False, argparse.SUPPRESS)) or action.nargs == 0):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)  # the subcommands' parsers too
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, not the usage block
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def old_spelling(parser, *flags: str, dest: str, **kwargs) -> None:
    """Accept ``flags``, an option's former name, as a hidden alias of the option stored in ``dest``.

    Kept for one release so scripts written for the old name keep working; absent from --help.
    """
    parser.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
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
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args._run(args) or 0)
    except Terminated:
        print(f"cellgen {args.command}: terminated (SIGTERM); temporary files removed", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("cellgen: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        line, code = explain(exc, args.command)
        print(line, file=sys.stderr)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _on_sigterm(signum, frame):
    raise Terminated()


_EXPECTED = (UserError, ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
             NotADirectoryError)
_DISK = {
    errno.ENOSPC: "the disk is full",
    errno.EROFS: "the file system is read-only",
    getattr(errno, "EDQUOT", -1): "the disk quota is used up",  # not defined on Windows
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def _one_line(text) -> str:
    return " ".join(str(text).split())


def explain(exc: BaseException, command: str) -> tuple[str, int]:
    """``(line, exit code)`` for an exception that ended ``command``: 2 when the user can act, else 1."""
    head = f"cellgen {command}: error:"
    if isinstance(exc, _EXPECTED):
        return f"{head} {_one_line(exc)}", 2
    if isinstance(exc, MemoryError):
        from ._checks import TooBig

        if isinstance(exc, TooBig):  # refused up front: the message says what to change
            return f"{head} {_one_line(exc)}", 2
        detail = f" ({_one_line(exc)[:120]})" if str(exc) else ""
        return (f"{head} not enough memory for this job{detail}; use smaller inputs or options (fewer "
                "samples, a smaller --batch or --tile) or a machine with more RAM"), 2
    if isinstance(exc, OSError) and exc.errno in _DISK:
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"{head} {_DISK[exc.errno]}{where}; free some space or choose another output folder", 2
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{head} {exc.strerror or _one_line(exc)}{where}", 2
    if isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower():
        return (f"{head} the device ran out of memory; use a smaller --batch or --tile, or "
                "--device cpu"), 2
    report = write_report(exc, command)
    where = f"; full report: {report}" if report else ""
    return (f"cellgen {command}: internal error: {type(exc).__name__}: {_one_line(exc)[:300]}{where} "
            "(please report it)"), 1


def write_report(exc: BaseException, command: str):
    """Write the traceback of ``exc`` to a file in the user log folder (or the temp folder)."""
    import datetime
    import os
    import tempfile
    import traceback
    from pathlib import Path

    from . import __version__

    text = (f"cellgen {command} (napari-cellgen {__version__}, Python {sys.version.split()[0]}, "
            f"{sys.platform})\nargv: {sys.argv}\n\n" + "".join(traceback.format_exception(exc)))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        from .models.store import user_dir

        folders = [user_dir().parent / "logs"]
    except Exception:  # pragma: no cover
        folders = []
    folders.append(Path(tempfile.gettempdir()) / "napari-cellgen")
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"cellgen-{command}-{stamp}-{os.getpid()}.txt"
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

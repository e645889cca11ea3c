"""What every command does with the paths it reads and writes: one answer for all of them. No Qt.

* :func:`check_outputs` runs before any work: it refuses an output that is an input, lies inside an
  input folder, or is another output (paths resolved, symlinks followed), a folder where a file is
  expected, a missing output folder, one that cannot be written, or a disk without room.
* :func:`read_input` opens an image stack for a command and prints the reader's warnings
  (e.g. RGB converted to grayscale) on stderr.
* Temporary files and folders carry the pid and host of the process that made them
  (``.cellgen-PID-HOST-xxxxxxxx``, ``.NAME.partial-PID-HOST-xxxxxxxx``, ...): :func:`remove_stale`
  deletes those whose process is gone (a SIGKILL, a power cut) on the next run in that folder.
* :func:`atomic_write_bytes` and :func:`atomic_dir` write a file or a whole folder so that readers see
  the old or the new version, never a mixture; data are fsynced before the rename.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

KINDS = ("file", "dir", "zarr", "auto")  # auto: a zarr for NAME.zarr, else a file
_STALE = re.compile(
    r"^\.(?:(?P<base>.+)\.)?(?P<kind>cellgen|partial|old|new|tmp)-(?P<pid>\d+)-"
    r"(?:(?P<host>[A-Za-z0-9_.]+)-)?(?P<rand>[A-Za-z0-9_]+)$"
)


# --------------------------------------------------------------------------- names
def host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"


def tag(kind: str) -> str:
    """``KIND-PID-HOST-``: the start of a temporary name that :func:`remove_stale` recognises."""
    return f"{kind}-{os.getpid()}-{host()}-"


def real(path: str | os.PathLike) -> Path:
    """The absolute path with ``~`` expanded and every symlink followed (also for missing tails)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def is_zarr_name(path: str | os.PathLike) -> bool:
    return os.fspath(path).rstrip("/\\").lower().endswith(".zarr")


# --------------------------------------------------------------------------- output checks
def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _probe(folder: Path) -> None:
    """Refuse a folder we may not write into: its permissions, then a real file created and deleted
    (the only test that also holds for root and for read-only mounts)."""
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"cannot write into {folder} (permission denied): choose another output folder")
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix="." + tag("tmp"))
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise PermissionError(f"cannot write into {folder} ({why}): choose another output folder") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


def check_outputs(
    inputs: Iterable[tuple[str, str | os.PathLike | None]] = (),
    outputs: Iterable[tuple] = (),
) -> list[Path]:
    """Refuse, before any work, outputs that would destroy data or cannot be written.

    ``inputs``: ``(option, path)`` pairs (None paths are skipped). ``outputs``: ``(option, path,
    kind)`` or ``(option, path, "dir", names)`` with ``kind`` one of :data:`KINDS`; ``names`` are
    the entries a folder output will hold (an input among them is refused). Raises ValueError /
    FileNotFoundError / PermissionError with one line that names the option; returns the resolved
    output paths.
    """
    ins = [(opt, Path(p), real(p)) for opt, p in inputs if p is not None and str(p) != ""]
    outs: list[tuple[str, Path, Path, str, tuple]] = []
    for item in outputs:
        opt, p, kind = item[0], item[1], item[2]
        if p is None or str(p) == "":
            continue
        if kind == "auto":
            kind = "zarr" if is_zarr_name(p) else "file"
        outs.append((opt, Path(p), real(p), kind, tuple(item[3]) if len(item) > 3 else ()))
    for opt, p, rp, kind, names in outs:
        for iopt, ip, rip in ins:
            if rp == rip:
                raise ValueError(f"{opt} {p} is the same path as {iopt} {ip}: refusing to overwrite an "
                                 "input; choose another output name")
            if rip.is_dir() and _inside(rp, rip):
                raise ValueError(f"{opt} {p} lies inside the {iopt} folder {ip}: writing there would change "
                                 "the input; choose an output outside it")
            if kind == "dir" and any(_inside(rip, rp / n) for n in names):
                raise ValueError(f"{opt} {p} would overwrite {iopt} {ip}: choose another output folder")
    for i, (opt, p, rp, _, _) in enumerate(outs):
        for opt2, p2, rp2, kind2, _ in outs[i + 1:]:
            if rp == rp2 or (kind2 == "dir" and _inside(rp, rp2)) or _inside(rp2, rp):
                raise ValueError(f"{opt} {p} and {opt2} {p2} overlap: give each output its own name")
    for opt, p, rp, kind, _ in outs:
        _check_target(opt, p, rp, kind)
    return [rp for _, _, rp, _, _ in outs]


def check_space(folder: str | os.PathLike, need_bytes: int, what: str = "the outputs") -> None:
    """Refuse a job whose files would not fit on the disk of ``folder``."""
    free = _free_bytes(Path(folder))
    if free is not None and free < need_bytes:
        raise ValueError(f"not enough free space in {folder} for {what}: about {need_bytes / 1e9:.1f} GB are "
                         f"needed and {free / 1e9:.1f} GB are free; free some space or write elsewhere")


def _check_target(opt: str, p: Path, rp: Path, kind: str) -> None:
    if kind == "file" and rp.is_dir():
        raise IsADirectoryError(f"{opt} {p} is a folder; give a file name such as {p / 'out.tif'}")
    if kind == "dir" and rp.exists() and not rp.is_dir():
        raise ValueError(f"{opt} {p} exists and is not a folder; give a folder name")
    if kind == "zarr" and rp.exists():
        from .io.zarr_io import is_zarr

        if not is_zarr(rp):
            what = "folder" if rp.is_dir() else "file"
            raise ValueError(f"{opt} {p} exists and is a {what}, not a zarr: refusing to replace it")
    folder = rp if (kind == "dir" and rp.is_dir()) else rp.parent
    if not folder.exists():
        raise FileNotFoundError(f"the output folder {folder} (for {opt}) does not exist: create it first")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} (for {opt}) is a file, not a folder")
    _probe(folder)


# --------------------------------------------------------------------------- inputs
def check_input(opt: str, path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{opt} {p} does not exist")
    return p


def read_input(path: str | os.PathLike, command: str, opt: str = "input", quiet_notes: bool = True):
    """``read_stack(path)`` for a command: one-line errors, the reader's warnings on stderr."""
    from .io import read_stack

    src = check_input(opt, path)
    try:
        got = read_stack(src)
    except (ValueError, OSError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise ValueError(f"cannot read {src}: {exc}") from exc
    if got is None:
        raise ValueError(f"{src} is not an image stack napari-cellgen can read (TIFF, zarr or a folder of slices)")
    data, meta = got
    for w in (meta or {}).get("warnings", []) or []:
        print(f"cellgen {command}: {src.name}: {w}", file=sys.stderr)
    if not quiet_notes:
        for n in (meta or {}).get("notes", []) or []:
            print(f"cellgen {command}: {src.name}: {n}", file=sys.stderr)
    return data, meta


# --------------------------------------------------------------------------- temporary files
def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True when it cannot be told)."""
    if pid <= 0:
        return True
    if pid == os.getpid():
        return True
    try:
        import psutil

        return bool(psutil.pid_exists(pid))
    except ImportError:  # pragma: no cover - psutil ships with napari
        pass
    if os.name != "posix":  # pragma: no cover - os.kill(pid, 0) would end the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale(*folders: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders in ``folders`` left by dead processes of this host.

    A ``.NAME.old-*`` folder (a zarr or checkpoint moved aside while its replacement was renamed in)
    goes back to ``NAME`` when ``NAME`` is missing, so an interrupted swap loses nothing.
    """
    removed: list[Path] = []
    me = host()
    for folder in folders:
        try:
            entries = list(Path(folder).iterdir())
        except OSError:
            continue
        for entry in entries:
            m = _STALE.match(entry.name)
            if not m or (m["host"] and m["host"] != me) or pid_alive(int(m["pid"])):
                continue
            base = m["base"]
            if m["kind"] == "old" and base and not (entry.parent / base).exists():
                with contextlib.suppress(OSError):
                    os.replace(entry, entry.parent / base)
                continue  # put back, or left alone: never delete the only copy
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            removed.append(entry)
    return removed


def temp_dir(parent: str | os.PathLike) -> tempfile.TemporaryDirectory:
    """A temporary folder ``.cellgen-PID-HOST-xxxxxxxx`` in ``parent`` (stale ones removed first)."""
    remove_stale(parent)
    return tempfile.TemporaryDirectory(dir=parent, prefix="." + tag("cellgen"))


def temp_name(target: Path, kind: str) -> Path:
    """A sibling of ``target`` named ``.TARGET.KIND-PID-HOST-xxxxxxxx``."""
    return target.parent / f".{target.name}.{tag(kind)}{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- durable writes
def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file to the disk (Windows needs a writable handle for that)."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in ``path`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_mode(path: str | os.PathLike | None = None) -> int:
    """Permissions for a new file at ``path``: the old file's if there is one, else 0o666 less the umask."""
    if path is not None:
        with contextlib.suppress(OSError):
            return Path(path).stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file through a temporary sibling: readers see the old or the new file, never half.

    Yields the temporary path to write; when the block ends without an error it gets the usual
    permissions (:func:`file_mode`; mkstemp makes 0600 files), is fsynced and renamed over ``path``.
    On an error it is deleted and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{tag('tmp')}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode(path))
        fsync_file(tmp)  # the data reach the disk before the new name does
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished folder ``new`` in place of ``target`` (a sibling) by renames.

    An existing ``target`` is moved aside first and deleted after; if the process dies between the
    two renames, :func:`remove_stale` puts it back on the next run in that folder.
    """
    old = None
    if target.exists():
        old = temp_name(target, "old")
        os.replace(target, old)
    os.replace(new, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Fill a new folder, then put it in place of ``target`` as one unit.

    Yields a temporary sibling folder; when the block ends without an error its files are fsynced
    and it replaces ``target`` (the old one is moved aside first and deleted after; if the process
    dies between the two renames, :func:`remove_stale` moves the old one back). On an error the
    temporary folder is deleted and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target.parent)
    tmp = temp_name(target, "new")
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync_file(f)
        fsync_dir(tmp)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

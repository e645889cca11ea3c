"""One small progress interface shared by the CLI (tqdm) and the viewer (thread_worker)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")


class Progress(NamedTuple):
    """What long jobs yield: ``done`` of ``total`` units of ``stage``; ``info`` carries metrics."""

    done: int
    total: int
    stage: str = ""
    info: dict | None = None


def run(gen: Generator[Progress, None, T], callback: Callable[[Progress], Any] | None = None) -> T:
    """Drive a job generator to the end and return its result (the synchronous wrapper)."""
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(p)


def stoppable(gen: Generator[Progress, None, T], stop: Callable[[], bool] | None = None):
    """Yield ``gen``'s progress until it ends or ``stop()`` is true (checked before each step).

    ``gen`` is closed in the calling thread either way, so its ``finally`` blocks (e.g. writing
    the best checkpoint) run there. Returns ``(stopped, result, last_progress)``; ``result`` is
    None when stopped.
    """
    stopped, result, last = False, None, None
    try:
        while True:
            if stop is not None and stop():
                stopped = True
                break
            try:
                last = next(gen)
            except StopIteration as done:
                result = done.value
                break
            yield last
    finally:
        gen.close()
    return stopped, result, last


def _postfix(info: dict | None) -> dict:
    return {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in (info or {}).items()}


def tqdm_callback(desc: str = "", file=None, every: float = 5.0):
    """A progress callback for the command line, writing to ``file`` (default: stderr).

    On a terminal: one live tqdm bar per stage. Anywhere else (a log file, a pipe, a batch
    job's output): one plain line each time a stage passes another ``every`` percent, and
    when it ends, instead of a carriage-return redraw per step (1,000 steps give about
    21 lines, not 1,000 updates).
    """
    import sys

    stream = file if file is not None else sys.stderr
    try:
        live = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        live = False
    return _tqdm_bar(desc, stream) if live else _log_lines(desc, stream, every)


def _tqdm_bar(desc: str, stream):
    from tqdm import tqdm

    state: dict[str, Any] = {"bar": None, "stage": None}

    def cb(p: Progress) -> None:
        if state["stage"] != p.stage or state["bar"] is None:
            if state["bar"] is not None:
                state["bar"].close()
            state["bar"] = tqdm(total=p.total, desc=p.stage or desc, unit="step", dynamic_ncols=True,
                                file=stream)
            state["stage"] = p.stage
        bar = state["bar"]
        bar.n = p.done
        if p.info:
            bar.set_postfix(_postfix(p.info), refresh=False)
        bar.refresh()
        if p.done >= p.total:
            bar.close()
            state["bar"] = None

    return cb


def _log_lines(desc: str, stream, every: float):
    import time

    state: dict[str, Any] = {"stage": None, "step": -1, "t0": 0.0}

    def cb(p: Progress) -> None:
        now = time.perf_counter()
        if state["stage"] != p.stage:
            state.update(stage=p.stage, step=-1, t0=now)
        total = max(int(p.total), 1)
        pct = 100.0 * min(p.done, total) / total
        step = int(pct // every) if p.done < total else int(100 // every) + 1  # the end is always shown
        if step <= state["step"]:
            return
        state["step"] = step
        elapsed = now - state["t0"]
        eta = f", ~{elapsed * (total - p.done) / p.done:.0f} s left" if 0 < p.done < total else ""
        extra = "".join(f"  {k} {v}" for k, v in _postfix(p.info).items())
        stream.write(f"{p.stage or desc or 'progress'}: {p.done}/{p.total} ({pct:.0f} %), "
                     f"{elapsed:.0f} s{eta}{extra}\n")
        stream.flush()

    return cb

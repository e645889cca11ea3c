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


def tqdm_callback(desc: str = ""):
    """A callback that draws a tqdm bar on stderr, one bar per stage."""
    from tqdm import tqdm

    state: dict[str, Any] = {"bar": None, "stage": None}

    def cb(p: Progress) -> None:
        if state["stage"] != p.stage or state["bar"] is None:
            if state["bar"] is not None:
                state["bar"].close()
            state["bar"] = tqdm(total=p.total, desc=p.stage or desc, unit="step", dynamic_ncols=True)
            state["stage"] = p.stage
        bar = state["bar"]
        bar.n = p.done
        if p.info:
            bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in p.info.items()}, refresh=False)
        bar.refresh()
        if p.done >= p.total:
            bar.close()
            state["bar"] = None

    return cb

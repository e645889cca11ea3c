"""Thread-worker helpers shared by the dock widgets: :class:`Job`, the one way a dock runs work."""

from __future__ import annotations

import functools
import threading

from napari.qt.threading import GeneratorWorker


class JobError(Exception):
    """A RuntimeError raised by a job, re-raised so that the worker's ``errored`` signal fires."""


def surfacing_errors(func):
    """Wrap a job generator so a RuntimeError in it reaches ``errored``.

    superqt's GeneratorWorker treats a RuntimeError from the generator as "the worker was
    deleted" and only warns ("RuntimeError in aborted thread"): no ``errored`` signal, so the
    widget would never tell the user. torch errors (out of memory, bad shapes) and our
    cluster/block errors are RuntimeErrors, so jobs run through this wrapper.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return (yield from func(*args, **kwargs))
        except RuntimeError as exc:
            raise JobError(str(exc)) from exc

    return wrapper


def if_alive(method):
    """Skip a job callback (a widget method) that arrives after the widget was closed (Qt objects deleted)."""

    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            return method(self, *args)
        except RuntimeError as exc:
            if "has been deleted" not in str(exc):
                raise

    return wrapper


class QuietGeneratorWorker(GeneratorWorker):
    """A GeneratorWorker whose errors reach only the widget's ``errored`` handler.

    napari's default worker also relays each error to the notification manager (a second
    notification, with a traceback, for an error the widget already explains in one line).
    """

    def _relay_error(self, exc):  # the widget shows it
        pass


class Job:
    """One run of a job generator (``func(*args, **kwargs)`` yielding progress) in a thread worker.

    Its ``state`` is "running", then exactly one of "done" (it returned), "failed" (it raised)
    or "cancelled" (it ended without either, after :meth:`cancel`); it is set from the worker's
    signals, never guessed from what a widget shows. The callbacks run in the main thread:
    ``on_progress(p)`` per yield, ``on_done(result)``, ``on_error(exc)``, then always
    ``on_end(state)`` when the thread has finished.

    ``polite_stop=True``: the job gets a ``stop`` keyword (a callable that turns true on
    :meth:`cancel`) and ends itself, returning normally (a training writes its best checkpoint
    first), so such a job ends "done"; otherwise :meth:`cancel` aborts the worker at its next yield.
    """

    _alive: set = set()  # running jobs: Qt holds bound-method slots weakly, a job nobody keeps must live on

    def __init__(self, func, *args, on_progress=None, on_done=None, on_error=None, on_end=None,
                 polite_stop: bool = False, start: bool = True, **kwargs):
        from napari.qt.threading import create_worker

        self.state = "running"
        self.cancel_requested = False
        self._stop = threading.Event() if polite_stop else None
        if polite_stop:
            kwargs["stop"] = self._stop.is_set
        self._callbacks = (on_progress, on_done, on_error, on_end)
        # errors go to `errored` only (not re-raised in the main thread, not relayed twice)
        self.worker = create_worker(surfacing_errors(func), *args, **kwargs, _start_thread=False,
                                    _worker_class=QuietGeneratorWorker, _ignore_errors=True)
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finished)
        if start:
            self.start()

    @property
    def running(self) -> bool:
        return self.state == "running"

    def start(self) -> Job:
        Job._alive.add(self)
        self.worker.start()
        return self

    def cancel(self) -> None:
        """Ask the job to end: politely (``stop``) or at its next yield. No-op once it has ended."""
        if not self.running:
            return
        self.cancel_requested = True
        if self._stop is not None:
            self._stop.set()
        else:
            self.worker.quit()

    def _yielded(self, p):
        if self._callbacks[0] is not None:
            self._callbacks[0](p)

    def _returned(self, result):
        self.state = "done"
        if self._callbacks[1] is not None:
            self._callbacks[1](result)

    def _errored(self, exc):
        self.state = "failed"
        if self._callbacks[2] is not None:
            self._callbacks[2](exc)

    def _finished(self):
        Job._alive.discard(self)
        if self.state == "running":  # neither returned nor raised: the worker was aborted
            self.state = "cancelled"
        if self._callbacks[3] is not None:
            self._callbacks[3](self.state)

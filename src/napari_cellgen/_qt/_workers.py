"""Thread-worker helpers shared by the dock widgets."""

from __future__ import annotations

import functools

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


class QuietGeneratorWorker(GeneratorWorker):
    """A GeneratorWorker whose errors reach only the widget's ``errored`` handler.

    napari's default worker also relays each error to the notification manager (a second
    notification, with a traceback, for an error the widget already explains in one line).
    """

    def _relay_error(self, exc):  # the widget shows it
        pass

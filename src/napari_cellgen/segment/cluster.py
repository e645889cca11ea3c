"""Connecting to dask.distributed: an existing scheduler or a local cluster. No Qt.

``dask_client(scheduler=ADDRESS)`` connects to a running scheduler (``dask scheduler``,
dask-jobqueue on SLURM/PBS, a Kubernetes cluster ...); ``dask_client(workers=N)`` starts a
``LocalCluster`` of N single-threaded worker processes on this machine. Either way the
caller gets a ``distributed.Client`` and everything is shut down on exit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

CONNECT_TIMEOUT = 10.0  # seconds to wait for a scheduler


class ClusterError(RuntimeError):
    """The cluster cannot be used: unreachable scheduler, no workers, dask not installed."""


def _require_distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ClusterError(
            "running on a dask cluster needs dask.distributed: pip install 'dask[distributed]' zarr"
        ) from exc
    return distributed


def check_address(scheduler: str) -> str:
    """``scheduler`` stripped, if it reads as a dask address (``tcp://HOST:PORT``, or ``HOST:PORT`` as dask
    takes it); otherwise a ValueError that says what one looks like."""
    addr = str(scheduler).strip()
    scheme, sep, rest = addr.partition("://")
    host, _, port = (rest if sep else addr).rpartition(":")
    ok = (scheme.isalpha() and bool(rest)) if sep else (bool(host) and port.isdigit())
    if not ok:
        raise ValueError(f"{scheduler!r} is not a dask scheduler address: use e.g. tcp://HOST:8786 or HOST:8786")
    return addr


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None,
    workers: int | None = None,
    *,
    memory_limit: str | int | None = "auto",
    timeout: float | None = None,
    processes: bool = True,
) -> Iterator[object]:
    """A ``distributed.Client`` for ``scheduler`` (an address) or a local cluster of ``workers``.

    ``memory_limit`` is per local worker (bytes or "512MiB"; dask pauses a worker at 80 % of it
    and restarts it at 95 %). Raises :class:`ClusterError` with what to do when the scheduler
    cannot be reached within ``timeout`` seconds.
    """
    distributed = _require_distributed()
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    if scheduler and workers:
        raise ValueError("give either a scheduler address or a number of local workers, not both")
    if scheduler:
        scheduler = check_address(scheduler)
        try:
            client = distributed.Client(scheduler, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(
                f"cannot reach the dask scheduler at {scheduler} within {timeout:g} s "
                f"({type(exc).__name__}: {exc}). Check the address (e.g. tcp://HOST:8786), that "
                "`dask scheduler` (or your dask-jobqueue cluster) is running and that this machine "
                "can reach it; or use --workers N for a cluster on this machine."
            ) from exc
        try:
            yield client
        finally:
            client.close()
        return
    n = int(workers or 1)
    if n < 1:
        raise ValueError(f"the number of workers must be at least 1, got {n}")
    import dask

    # A block task holds its data itself (nothing for dask to spill), and most of a worker's memory
    # is torch's libraries, which never shrink: pausing at 80 % would stall the worker for good.
    # The limit stays a hard one: the nanny restarts a worker that passes 95 % of it.
    # MALLOC_TRIM_THRESHOLD_ (dask's default for workers) slows torch inference 1.6-2x: leave it unset.
    local_config = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
                    "distributed.worker.memory.pause": False,
                    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    with dask.config.set(local_config):
        cluster = distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=processes, memory_limit=memory_limit,
            dashboard_address=None, silence_logs=40,
        )
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def torch_threads_for(workers: int | None) -> int:
    """CPU threads per worker process that fill this machine without oversubscribing it."""
    return max(1, (os.cpu_count() or 1) // max(1, int(workers or 1)))


def peak_rss() -> int:
    """This process's peak resident memory in bytes.

    Linux: ``VmHWM`` of /proc/self/status, which starts afresh at exec; ``ru_maxrss`` would
    also count the parent's memory at the time a spawned worker was forked.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb if sys.platform == "darwin" else kb * 1024)


def worker_peak_memory(client) -> dict[str, int]:
    """Peak resident memory (bytes) of every worker process since it started."""
    return client.run(peak_rss)

"""Mirror engines: how a mirror run's conversions are carried out, one after another or fanned out.

An engine is one method, ``run(work, jobs)``: it calls ``work(job)`` for every job, somewhere, and
yields each ``(index, result)`` as soon as that job is done, so the caller records progress (the
mirror's state file) job by job whatever the engine. ``mirror`` hands it its entries; the engine
knows nothing of them beyond what a ``Job`` says (how many Hub connections it wants). Two engines:

- ``Serial``: here, in order.
- ``Dask`` (``distributed``): one job per worker task. Why Dask: it is a Python library (no broker
  or JVM to run), its ``LocalCluster`` is the same engine in local mode (what the tests use), and a
  real cluster is one scheduler address away (``HFSTREAM_DASK_SCHEDULER``). Its distributed
  ``Semaphore`` gives the global cap on concurrent Hub connections across all workers: a task takes
  as many leases as the connections it opens.

Any object with that ``run`` method is an engine too (``mirror(..., engine=...)``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar

from . import errors, settings

J = TypeVar("J", bound="Job")
R = TypeVar("R")


class Job(Protocol):
    """What an engine may know of a job: the Hub connections it wants, and the same job with fewer."""

    @property
    def connections(self) -> int: ...

    def with_connections(self: J, n: int) -> J: ...


class Engine(Protocol):
    def run(self, work: Callable[[J], R], jobs: Sequence[J]) -> Iterator[tuple[int, R]]:
        """``work(job)`` for every job; yields ``(index in jobs, result)`` as each one is done.

        ``work`` must be a module-level function (it may be pickled by reference to run elsewhere)
        that never raises for an expected failure: it returns a result that says so.
        """
        ...


class Serial:
    """Every job here, one after another."""

    def run(self, work: Callable[[J], R], jobs: Sequence[J]) -> Iterator[tuple[int, R]]:
        for i, job in enumerate(jobs):
            yield i, work(job)


class Dask:
    """Every job a task on a Dask cluster: a local one of ``workers`` processes (threads with
    ``HFSTREAM_DASK_PROCESSES=0``), or the one at ``HFSTREAM_DASK_SCHEDULER``; at most
    ``hub_connections`` Hub connections open across all of them."""

    def __init__(self, *, workers: int = 2, hub_connections: int = 16, processes: bool | None = None):
        self.workers = workers
        self.hub_connections = hub_connections
        self.processes = settings.dask_processes() if processes is None else processes

    def run(self, work: Callable[[J], R], jobs: Sequence[J]) -> Iterator[tuple[int, R]]:
        try:
            from distributed import Client, LocalCluster, as_completed
        except ImportError:
            raise errors.UnsupportedOptionError(
                "the dask engine needs the 'distributed' package: pip install 'hfstream[dask]'") from None
        if not jobs:
            return
        address = settings.dask_scheduler()
        cluster = None
        if address:
            try:
                client = Client(address)
            except (OSError, TimeoutError) as e:  # refused, unreachable, or no answer within Dask's connect timeout
                raise errors.NetworkError(f"cannot reach the Dask scheduler at {address} (HFSTREAM_DASK_SCHEDULER): "
                                          f"{str(e).strip() or type(e).__name__}") from None
        else:
            # loopback only when workers are processes; in-process workers talk without sockets
            where = {"host": "127.0.0.1"} if self.processes else {}
            cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=self.processes,
                                   dashboard_address=None, **where)
            client = Client(cluster)
        try:
            futures = client.map(_task, [work] * len(jobs), list(jobs), [self.hub_connections] * len(jobs),
                                 pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            for future in as_completed(futures):
                yield index[future.key], future.result()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


#: the engines ``mirror --engine`` names
ENGINES: dict[str, Callable[..., Engine]] = {"serial": lambda **_: Serial(), "dask": Dask}


def engine(name: str, **options: Any) -> Engine:
    """The engine called ``name``, made with ``options`` (``workers``, ``hub_connections``: Dask's)."""
    if name not in ENGINES:
        raise errors.UnsupportedOptionError(f"unknown engine {name!r}; choose {' or '.join(ENGINES)}")
    return ENGINES[name](**options)


def _task(work: Callable[[J], R], job: J, cap: int) -> R:
    """On a worker: take this job's share of the global connection cap, then run it."""
    from distributed import Lock, Semaphore

    wanted = min(job.connections, cap)
    sem = Semaphore(max_leases=cap, name="hfstream-hub-connections")
    # Leases are taken under one lock so two tasks never each hold half of what they need.
    with Lock("hfstream-hub-connections-acquire"):
        for _ in range(wanted):
            sem.acquire()
    try:
        return work(job.with_connections(wanted))
    finally:
        for _ in range(wanted):
            sem.release()

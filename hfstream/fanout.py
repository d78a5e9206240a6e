"""Mirror entries fanned out over Dask (``distributed``): one conversion per worker task.

Why Dask: it is a Python library (no broker or JVM to run), its ``LocalCluster`` is the same
engine in local mode (what the tests use), and a real cluster is one scheduler address away
(``HFSTREAM_DASK_SCHEDULER``). Its distributed ``Semaphore`` gives the global cap on concurrent
Hub connections across all workers: a task takes as many leases as the connections it opens.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from . import errors


def run_on_dask(jobs: list[tuple[Any, str]], *, workers: int = 2, hub_connections: int = 16,
                processes: bool | None = None) -> list[Any]:
    """Run ``mirror.run_entry`` for every (entry, sha) on a Dask cluster; results in input order."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise errors.UnsupportedOptionError(
            "the dask engine needs the 'distributed' package: pip install 'hfstream[dask]'") from None
    if not jobs:
        return []
    address = os.environ.get("HFSTREAM_DASK_SCHEDULER")
    if processes is None:
        processes = os.environ.get("HFSTREAM_DASK_PROCESSES", "1") != "0"
    cluster = None
    if address:
        client = Client(address)
    else:
        # loopback only when workers are processes; in-process workers talk without sockets
        where = {"host": "127.0.0.1"} if processes else {}
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                               dashboard_address=None, **where)
        client = Client(cluster)
    try:
        futures = client.map(_task, [j[0] for j in jobs], [j[1] for j in jobs],
                             [hub_connections] * len(jobs), pure=False)
        return client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _task(entry, sha: str, cap: int):
    """On a worker: take this conversion's share of the global connection cap, then convert."""
    from distributed import Lock, Semaphore

    from .mirror import run_entry

    wanted = min(int(dict(entry.options).get("connections", 8)), cap)
    sem = Semaphore(max_leases=cap, name="hfstream-hub-connections")
    # Leases are taken under one lock so two tasks never each hold half of what they need.
    with Lock("hfstream-hub-connections-acquire"):
        for _ in range(wanted):
            sem.acquire()
    try:
        options = dict(entry.options)
        options["connections"] = wanted
        entry = dataclasses.replace(entry, options=tuple(sorted(options.items())))
        return run_entry(entry, sha)
    finally:
        for _ in range(wanted):
            sem.release()

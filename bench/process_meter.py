"""Where the CPU goes: CPU seconds and resident memory of each process of the fleet (and of the
PostgreSQL and Redis servers it uses), read from the OS before and after a benchmark run.

CPU time, unlike wall time, is what each process spent whatever else the machine did, so
"CPU ms per image" per process adds up to the whole fleet's cost of one image; dividing the cores
by that sum gives the throughput ceiling of one machine. A process's tree is counted (the Celery
worker's pool children, PostgreSQL's backends), from `psutil`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import psutil

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """CPU seconds (user + system) and resident bytes of one process tree at one moment."""

    cpu_s: float
    rss_bytes: int


def process_sample(process: psutil.Process, reaped_children: bool = False) -> Sample:
    """One process; with `reaped_children`, plus the CPU of the children it has already waited for
    (a PostgreSQL backend that ended mid-run, a worker pool child that was replaced)."""
    try:
        times = process.cpu_times()
        cpu = times.user + times.system
        if reaped_children:
            cpu += times.children_user + times.children_system
        return Sample(cpu, process.memory_info().rss)
    except psutil.Error:
        return Sample(0.0, 0)


def tree_sample(root: psutil.Process) -> Sample:
    """The root and all its living descendants, summed; processes that vanish are skipped."""
    cpu, rss = 0.0, 0
    try:
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return Sample(0.0, 0)
    for process in members:
        sample = process_sample(process, reaped_children=True)
        cpu += sample.cpu_s
        rss += sample.rss_bytes
    return Sample(cpu, rss)


def server_process(names: tuple[str, ...]) -> psutil.Process | None:
    """The oldest process named one of `names` whose parent is not also one (a server's master)."""
    candidates = []
    for process in psutil.process_iter(["name", "create_time"]):
        try:
            if process.info["name"] not in names:
                continue
            parent = process.parent()
            if parent is not None and parent.name() in names:
                continue
            candidates.append(process)
        except psutil.Error:
            continue
    return min(candidates, key=lambda p: p.info["create_time"]) if candidates else None


# The local servers the PostgreSQL + Redis shape talks to (their whole trees are counted, so run
# the benchmark with nothing else using them).
SERVER_NAMES: Mapping[str, tuple[str, ...]] = {
    "postgresql": ("postgres", "postmaster"),
    "redis": ("redis-server",),
}


class ProcessMeter:
    """Samples a fixed set of named process trees; `delta` turns two samples into a cost table."""

    def __init__(self, roots: Mapping[str, psutil.Process], alone: Mapping[str, psutil.Process]) -> None:
        self.roots = dict(roots)
        self.alone = dict(alone)

    @classmethod
    def for_pids(cls, pids: Mapping[str, int], servers: bool, alone: Mapping[str, int]) -> ProcessMeter:
        """The trees of `pids`, the processes of `alone` without their children, and the local
        PostgreSQL and Redis servers when `servers`."""
        roots = {name: psutil.Process(pid) for name, pid in pids.items()}
        if servers:
            for name, names in SERVER_NAMES.items():
                if (process := server_process(names)) is not None:
                    roots[name] = process
        return cls(roots, {name: psutil.Process(pid) for name, pid in alone.items()})

    def sample(self) -> dict[str, Sample]:
        """Every tree's (or lone process's) CPU seconds and resident bytes now."""
        trees = {name: tree_sample(root) for name, root in self.roots.items()}
        return trees | {name: process_sample(process) for name, process in self.alone.items()}

    @staticmethod
    def cost(before: dict[str, Sample], after: dict[str, Sample], images: int) -> dict[str, object]:
        """CPU ms per image per process (and their sum) and resident MiB per process at the end."""
        per_image = {
            name: round((after[name].cpu_s - before[name].cpu_s) * 1000.0 / images, 2) if images else None
            for name in after
        }
        known = [v for v in per_image.values() if v is not None]
        return {
            "cpu_ms_per_image": per_image,
            "cpu_ms_per_image_total": round(sum(known), 2) if known else None,
            "rss_mib": {name: round(sample.rss_bytes / MIB, 1) for name, sample in after.items()},
        }

"""One node's resource ledger: what is leased to bidders and committed to running tasks.

The single place that enforces "a node never runs more than its declared capacity": a lease
(tentative, from a bid) or a commitment (a run) is only ever taken if it fits next to everything
already leased and committed.
"""

from __future__ import annotations

from dataclasses import dataclass

EPS = 1e-9  # cpus are sums of fractions, not exact: amounts this close count as equal
OVER_COMMIT_SLACK = 1e-6  # `over_committed`'s: above what `fits` lets through (EPS, rounding)


@dataclass(frozen=True, slots=True)
class Demand:
    cpus: float
    memory: int
    gpus: int


@dataclass(slots=True)
class _Lease:
    demand: Demand
    expires: float


class Ledger:
    def __init__(self, cpus: float, memory: int, gpus: int) -> None:
        self.capacity = Demand(cpus, memory, gpus)
        self._leases: dict[tuple, _Lease] = {}
        self._commits: dict[tuple, Demand] = {}
        self.changes = 0  # leases and commitments taken, given back or expired so far

    # --------------------------------------------------------------- queries

    def used(self) -> Demand:
        """Leased plus committed."""
        ds = [le.demand for le in self._leases.values()] + list(self._commits.values())
        return Demand(sum(d.cpus for d in ds), sum(d.memory for d in ds), sum(d.gpus for d in ds))

    def committed(self) -> Demand:
        ds = list(self._commits.values())
        return Demand(sum(d.cpus for d in ds), sum(d.memory for d in ds), sum(d.gpus for d in ds))

    def fits(self, d: Demand, extra: Demand | None = None) -> bool:
        u = self.used()
        c = self.capacity
        e = extra or Demand(0.0, 0, 0)
        return (
            u.cpus - e.cpus + d.cpus <= c.cpus + EPS
            and u.memory - e.memory + d.memory <= c.memory
            and u.gpus - e.gpus + d.gpus <= c.gpus
        )

    def could_ever_fit(self, d: Demand) -> bool:
        c = self.capacity
        return d.cpus <= c.cpus + EPS and d.memory <= c.memory and d.gpus <= c.gpus

    def holds(self, key: tuple) -> bool:
        return key in self._leases

    @property
    def lease_count(self) -> int:
        return len(self._leases)

    def lease_keys(self) -> list[tuple]:
        return list(self._leases)

    def is_committed(self, key: tuple) -> bool:
        return key in self._commits

    @property
    def queued(self) -> int:
        """Runs plus reservations: the queue length a Sparrow probe asks about."""
        return len(self._leases) + len(self._commits)

    def over_committed(self) -> bool:
        u, c = self.used(), self.capacity
        return u.cpus > c.cpus + OVER_COMMIT_SLACK or u.memory > c.memory or u.gpus > c.gpus

    # --------------------------------------------------------------- changes

    def lease(self, key: tuple, d: Demand, expires: float) -> bool:
        if key in self._leases:
            self._leases[key].expires = max(self._leases[key].expires, expires)
            return True
        if not self.fits(d):
            return False
        self._leases[key] = _Lease(d, expires)
        self.changes += 1
        return True

    def release(self, key: tuple) -> bool:
        if self._leases.pop(key, None) is None:
            return False
        self.changes += 1
        return True

    def commit(self, key: tuple, d: Demand, lease_key: tuple | None = None) -> bool:
        """Turn a lease into a commitment (or commit afresh if it still fits)."""
        if key in self._commits:
            return True
        lease = self._leases.get(lease_key) if lease_key is not None else None
        if lease is None and not self.fits(d):
            return False
        if lease is not None and not self.fits(d, extra=lease.demand):
            return False
        if lease_key is not None:
            self._leases.pop(lease_key, None)
        self._commits[key] = d
        self.changes += 1
        return True

    def uncommit(self, key: tuple) -> bool:
        if self._commits.pop(key, None) is None:
            return False
        self.changes += 1
        return True

    def expire(self, now: float) -> int:
        gone = [k for k, le in self._leases.items() if le.expires <= now]
        for k in gone:
            del self._leases[k]
        self.changes += len(gone)
        return len(gone)

    def next_expiry(self) -> float:
        return min((le.expires for le in self._leases.values()), default=float("inf"))

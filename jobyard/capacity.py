"""Pure admission: which pending instances may start on this node now.

The node has a capacity (CPU and memory). Default instances start only when
their requests fit beside everything already running; when they fit only
because best-effort instances hold the room, those are preempted (newest
first) and the default instance waits for them to go. Best-effort instances
use whatever nobody holds. A best-effort-first instance runs best-effort when
the room is free, and as a default instance otherwise, so it is never the one
left waiting while best-effort work could make way.

Defaults are admitted before best-effort work in every pass, so room freed by a
preemption goes to the default instance that asked for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from jobyard.domain import RunAs


@dataclass(frozen=True)
class Capacity:
    cpu: float  # cores
    memory_mb: int

    def __str__(self) -> str:
        return f"{self.cpu:g} CPU, {self.memory_mb} MiB"


@dataclass(frozen=True)
class Holder:
    """A live instance holding capacity. ``order`` breaks ties: larger is newer."""

    instance_id: int
    run_as: RunAs
    cpu: float
    memory_mb: int
    order: tuple[int, int]
    preempting: bool = False


@dataclass(frozen=True)
class Candidate:
    """A pending instance that could start. ``run_as`` is the class it asks for;
    ``flexible`` means best-effort-first: best-effort if it fits, else default."""

    instance_id: int
    run_as: RunAs
    cpu: float
    memory_mb: int
    flexible: bool = False


@dataclass
class Admission:
    start: list[tuple[int, RunAs]] = field(default_factory=list)
    preempt: list[int] = field(default_factory=list)
    waiting: dict[int, str] = field(default_factory=dict)


@dataclass
class _Ledger:
    """Capacity in use while one admission pass runs.

    ``cpu``/``memory_mb`` count every holder and every promise; ``leaving_*``
    is the part held by best-effort instances already being preempted.
    """

    capacity: Capacity
    cpu: float = 0.0
    memory_mb: int = 0
    leaving_cpu: float = 0.0
    leaving_memory_mb: int = 0

    def fits(self, cpu: float, memory_mb: int) -> bool:
        return _fits(self.capacity, self.cpu + cpu, self.memory_mb + memory_mb)

    def fits_once_gone(self, cpu: float, memory_mb: int, going: Sequence[Holder] = ()) -> bool:
        """Would the request fit once the leaving (and ``going``) holders are gone?"""
        freed_cpu = self.leaving_cpu + sum(h.cpu for h in going)
        freed_memory = self.leaving_memory_mb + sum(h.memory_mb for h in going)
        return _fits(
            self.capacity, self.cpu - freed_cpu + cpu, self.memory_mb - freed_memory + memory_mb
        )

    def hold(self, cpu: float, memory_mb: int) -> None:
        self.cpu += cpu
        self.memory_mb += memory_mb

    def leave(self, holder: Holder) -> None:
        self.leaving_cpu += holder.cpu
        self.leaving_memory_mb += holder.memory_mb

    def free(self) -> str:
        cpu = max(0.0, self.capacity.cpu - self.cpu)
        memory = max(0, self.capacity.memory_mb - self.memory_mb)
        return f"{cpu:g} CPU, {memory} MiB free of {self.capacity}"


_EPSILON = 1e-9  # CPU requests are floats: 0.1 * 3 must fit in 0.3


def _fits(capacity: Capacity, cpu: float, memory_mb: int) -> bool:
    return cpu <= capacity.cpu + _EPSILON and memory_mb <= capacity.memory_mb


def admit(
    capacity: Capacity, holders: Sequence[Holder], candidates: Sequence[Candidate]
) -> Admission:
    """Decide, for candidates in the order given (oldest task first), start or wait."""
    ledger = _Ledger(capacity)
    for holder in holders:
        ledger.hold(holder.cpu, holder.memory_mb)
        if holder.preempting:
            ledger.leave(holder)
    victims = sorted(
        (h for h in holders if h.run_as is RunAs.BEST_EFFORT and not h.preempting),
        key=lambda h: h.order,
        reverse=True,
    )
    admission = Admission()
    for candidate in candidates:
        if candidate.run_as is RunAs.DEFAULT and not candidate.flexible:
            _admit_default(candidate, ledger, victims, admission)
    for candidate in candidates:
        if candidate.run_as is RunAs.BEST_EFFORT or candidate.flexible:
            _admit_best_effort(candidate, ledger, victims, admission)
    return admission


def _admit_best_effort(
    candidate: Candidate, ledger: _Ledger, victims: list[Holder], admission: Admission
) -> None:
    if ledger.fits(candidate.cpu, candidate.memory_mb):
        ledger.hold(candidate.cpu, candidate.memory_mb)
        admission.start.append((candidate.instance_id, RunAs.BEST_EFFORT))
    elif candidate.flexible:
        _admit_default(candidate, ledger, victims, admission)
    else:
        admission.waiting[candidate.instance_id] = _short(candidate, ledger, "best-effort")


def _admit_default(
    candidate: Candidate, ledger: _Ledger, victims: list[Holder], admission: Admission
) -> None:
    cpu, memory_mb = candidate.cpu, candidate.memory_mb
    if not _fits(ledger.capacity, cpu, memory_mb):
        admission.waiting[candidate.instance_id] = (
            f"it requests {cpu:g} CPU, {memory_mb} MiB: more than the node's whole "
            f"capacity of {ledger.capacity}"
        )
    elif ledger.fits(cpu, memory_mb):
        ledger.hold(cpu, memory_mb)
        admission.start.append((candidate.instance_id, RunAs.DEFAULT))
    elif not ledger.fits_once_gone(cpu, memory_mb, victims):
        admission.waiting[candidate.instance_id] = _short(candidate, ledger, "default")
    else:
        # The room is held by best-effort work: make it go, newest first, and
        # promise the room to this instance so nothing else takes it meanwhile.
        while not ledger.fits_once_gone(cpu, memory_mb):
            victim = victims.pop(0)
            ledger.leave(victim)
            admission.preempt.append(victim.instance_id)
        ledger.hold(cpu, memory_mb)
        admission.waiting[candidate.instance_id] = (
            f"best-effort instances are being preempted to free {cpu:g} CPU, {memory_mb} MiB"
        )


def _short(candidate: Candidate, ledger: _Ledger, kind: str) -> str:
    return (
        f"a {kind} instance needs {candidate.cpu:g} CPU, {candidate.memory_mb} MiB; {ledger.free()}"
    )

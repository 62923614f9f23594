"""Admission of pending instances against the node's capacity."""

from __future__ import annotations

from jobyard.capacity import Admission, Candidate, Capacity, Holder, admit
from jobyard.domain import RunAs

NODE = Capacity(cpu=2.0, memory_mb=1024)
DEFAULT, BEST_EFFORT = RunAs.DEFAULT, RunAs.BEST_EFFORT


def holder(
    instance_id: int,
    run_as: RunAs,
    cpu: float = 1.0,
    memory_mb: int = 256,
    preempting: bool = False,
) -> Holder:
    return Holder(instance_id, run_as, cpu, memory_mb, (instance_id, 0), preempting)


def want(
    instance_id: int, run_as: RunAs, cpu: float = 1.0, memory_mb: int = 256, flexible: bool = False
) -> Candidate:
    return Candidate(instance_id, run_as, cpu, memory_mb, flexible)


def started(admission: Admission) -> dict[int, RunAs]:
    return dict(admission.start)


def test_default_instances_start_while_they_fit_then_wait_saying_what_is_short() -> None:
    candidates = [Candidate(i, DEFAULT, 0.75, 256) for i in (1, 2, 3)]
    admission = admit(NODE, [], candidates)
    assert started(admission) == {1: DEFAULT, 2: DEFAULT}
    assert admission.preempt == []
    assert admission.waiting[3] == (
        "a default instance needs 0.75 CPU, 256 MiB; 0.5 CPU, 512 MiB free of 2 CPU, 1024 MiB"
    )


def test_memory_is_a_limit_too() -> None:
    admission = admit(NODE, [holder(1, DEFAULT, 0.1, 900)], [Candidate(2, DEFAULT, 0.1, 200)])
    assert admission.start == []
    assert "200 MiB" in admission.waiting[2]


def test_a_request_larger_than_the_node_says_so() -> None:
    admission = admit(NODE, [], [Candidate(1, DEFAULT, 4.0, 64)])
    assert admission.waiting[1] == (
        "it requests 4 CPU, 64 MiB: more than the node's whole capacity of 2 CPU, 1024 MiB"
    )


def test_fractional_cpu_requests_add_up_exactly() -> None:
    admission = admit(Capacity(0.3, 1024), [], [Candidate(i, DEFAULT, 0.1, 16) for i in (1, 2, 3)])
    assert len(admission.start) == 3


def test_best_effort_uses_free_room_and_waits_without_preempting_anyone() -> None:
    holders = [holder(1, DEFAULT), holder(2, BEST_EFFORT, 0.5)]
    admission = admit(NODE, holders, [want(3, BEST_EFFORT, 0.5), want(4, BEST_EFFORT)])
    assert started(admission) == {3: BEST_EFFORT}
    assert admission.preempt == []
    assert admission.waiting[4].startswith("a best-effort instance needs 1 CPU")


def test_default_preempts_the_newest_best_effort_instances_and_waits_for_them() -> None:
    holders = [holder(1, BEST_EFFORT), holder(2, BEST_EFFORT, 0.5), holder(3, BEST_EFFORT, 0.5)]
    admission = admit(NODE, holders, [Candidate(4, DEFAULT, 1.0, 256)])
    assert admission.preempt == [3, 2]  # newest first, just enough
    assert admission.start == []
    assert "being preempted" in admission.waiting[4]


def test_room_being_freed_is_kept_for_the_default_instance() -> None:
    """Next turn: the victims are still leaving; nothing more is preempted, and
    a best-effort candidate cannot take the promised room."""
    holders = [
        holder(1, BEST_EFFORT),
        holder(2, BEST_EFFORT, preempting=True),
    ]
    candidates = [want(5, BEST_EFFORT, 0.5), want(4, DEFAULT)]
    admission = admit(NODE, holders, candidates)
    assert admission.preempt == []
    assert set(admission.waiting) == {4, 5}
    # Once the victim has gone the default instance starts, ahead of the best-effort one.
    admission = admit(NODE, [holder(1, BEST_EFFORT)], candidates)
    assert started(admission) == {4: DEFAULT}
    assert 5 in admission.waiting


def test_default_does_not_preempt_when_defaults_alone_fill_the_node() -> None:
    holders = [holder(1, DEFAULT, 1.5), holder(2, BEST_EFFORT, 0.5)]
    admission = admit(NODE, holders, [want(3, DEFAULT, 1.0)])
    assert admission.preempt == []
    assert admission.waiting[3].startswith("a default instance needs 1 CPU")


def test_best_effort_first_runs_best_effort_when_free_else_as_default() -> None:
    holders = [holder(1, BEST_EFFORT, 1.5)]
    candidates = [
        want(2, BEST_EFFORT, 0.5, flexible=True),
        want(3, BEST_EFFORT, 1.0, flexible=True),
    ]
    admission = admit(NODE, holders, candidates)
    assert started(admission) == {2: BEST_EFFORT}
    # No free room left: the second one becomes a default instance and makes room.
    assert admission.preempt == [1]
    assert "being preempted" in admission.waiting[3]


def test_defaults_are_admitted_before_best_effort_work_whatever_the_order() -> None:
    candidates = [want(1, BEST_EFFORT, 2.0), want(2, DEFAULT, 2.0)]
    admission = admit(NODE, [], candidates)
    assert started(admission) == {2: DEFAULT}
    assert 1 in admission.waiting

"""CPU and memory of instances, enforced and measured, against real processes.

Each test runs in the modes it applies to: ``cgroup`` (forced, so a host
without cgroups fails here instead of quietly testing the fallback; this
machine has cgroup v1) and ``psutil`` (forced).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobyard.runners._cgroups import CgroupSet
from jobyard.runners._hierarchy import _cgroup_mounts, _dir_of, _own_cgroups
from jobyard.runners._limits import join_wait_hint
from jobyard.runners._pid_file import has_ended
from jobyard.runners.base import InstanceExit, InstanceLaunch, Limits
from jobyard.runners.local import LocalRunner
from tests.integration.test_local_runner import (
    ExitQueue,
    Harness,
    is_gone,
    next_exit,
    read_pid,
    wait_for,
)

MIB = 1024 * 1024
WAIT = 60.0  # a throttled instance is slow

# Holds ~300 MB (bytes written, so every page is touched) unless stopped first.
ALLOCATE = """python3 -c '
import time
chunks = []
for _ in range(30):
    chunks.append(b"x" * (10 * 1000 * 1000))
time.sleep(30)
' && echo survived"""


@pytest.fixture(params=["cgroup", "psutil"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.clean_up()


def limited(
    harness: Harness, instance_id: int, script: str, cpu: float = 2.0, memory_mib: int = 256
) -> InstanceLaunch:
    launch = harness.launch(1, instance_id, script)
    limits = Limits(cpu=cpu, memory_bytes=memory_mib * MIB)
    return InstanceLaunch(
        launch.task_id, instance_id, launch.argv, launch.env, script, None, limits
    )


def run_one(
    harness: Harness, runner: LocalRunner, exits: ExitQueue, launch: InstanceLaunch
) -> InstanceExit:
    harness.start(runner, launch)
    return next_exit(exits, timeout=WAIT)


def cgroup_dirs(harness: Harness, instance_id: int) -> list[Path]:
    record = json.loads((harness.run_dir(1, instance_id) / "resources.json").read_text())
    cgroups = record["cgroups"]
    return sorted({Path(cgroups[c]) for c in ("memory", "cpu", "cpuacct")})


# --- the mode -----------------------------------------------------------------------


def test_the_mode_is_chosen_and_reported(harness: Harness) -> None:
    assert harness.runner("cgroup")[0].limits_mode in ("cgroup-v1", "cgroup-v2")
    assert harness.runner("psutil")[0].limits_mode == "psutil"
    assert harness.runner("off")[0].limits_mode == "off"
    assert harness.runner("auto")[0].limits_mode == harness.runners[0].limits_mode


def test_an_unknown_mode_is_refused(harness: Harness) -> None:
    with pytest.raises(ValueError, match="auto, cgroup, psutil, off"):
        harness.runner("cgroups")


# --- memory -------------------------------------------------------------------------


def test_an_instance_past_its_memory_limit_is_oom_killed(harness: Harness, mode: str) -> None:
    runner, exits = harness.runner(mode)

    report = run_one(harness, runner, exits, limited(harness, 1, ALLOCATE, memory_mib=64))

    assert report.oom_killed
    assert report.exit_code == 128 + signal.SIGKILL
    assert report.memory_limit_bytes == 64 * MIB
    assert report.peak_memory_bytes is not None and report.peak_memory_bytes >= 50 * MIB
    assert "survived" not in runner.log_path(1, 1).read_text()


def test_peak_memory_is_reported(harness: Harness, mode: str) -> None:
    runner, exits = harness.runner(mode)
    script = """python3 -c 'import time; held = b"x" * (50 * 1000 * 1000); time.sleep(1)'"""

    report = run_one(harness, runner, exits, limited(harness, 1, script))

    assert report.exit_code == 0
    assert not report.oom_killed
    assert report.peak_memory_bytes is not None and report.peak_memory_bytes >= 50 * 1000 * 1000
    assert report.peak_memory_bytes < 256 * MIB


def test_an_instance_that_exits_0_is_not_oom_killed(harness: Harness) -> None:
    """The kernel may kill a child for memory; an instance that copes with it succeeded."""
    runner, exits = harness.runner("cgroup")
    script = f"({ALLOCATE}) || echo coped"

    report = run_one(harness, runner, exits, limited(harness, 1, script, memory_mib=64))

    assert report.exit_code == 0
    assert not report.oom_killed
    assert runner.log_path(1, 1).read_text().endswith("coped\n")


def test_off_neither_limits_nor_measures(harness: Harness) -> None:
    runner, exits = harness.runner("off")
    script = """python3 -c 'held = b"x" * (100 * 1000 * 1000)'"""

    report = run_one(harness, runner, exits, limited(harness, 1, script, memory_mib=64))

    assert report == InstanceExit(1, 0, stopped=False, memory_limit_bytes=64 * MIB)


# --- CPU ----------------------------------------------------------------------------

BUSY_CPU_SECOND = """python3 -c '
import time
start = time.process_time()
while time.process_time() - start < 1:
    pass
'"""


def test_cpu_seconds_are_reported(harness: Harness, mode: str) -> None:
    runner, exits = harness.runner(mode)

    report = run_one(harness, runner, exits, limited(harness, 1, BUSY_CPU_SECOND))

    assert report.exit_code == 0
    assert report.cpu_seconds is not None and report.cpu_seconds > 0.5


def test_the_cpu_quota_throttles_a_busy_loop(harness: Harness) -> None:
    runner, exits = harness.runner("cgroup")
    # Busy for 1.5 s of wall time; prints the share of it that it got on a CPU.
    script = """python3 -c '
import time
start, cpu = time.monotonic(), time.process_time()
while time.monotonic() - start < 1.5:
    pass
print((time.process_time() - cpu) / (time.monotonic() - start))
'"""

    report = run_one(harness, runner, exits, limited(harness, 1, script, cpu=0.2))

    assert report.exit_code == 0
    share = float(runner.log_path(1, 1).read_text())
    assert share < 0.5  # about 0.2; unthrottled it would be near 1 on an idle core
    assert report.cpu_seconds is not None and report.cpu_seconds < 1.0


# --- nothing is left behind ---------------------------------------------------------


def test_a_setsid_escaped_process_is_killed_at_a_normal_end(harness: Harness, mode: str) -> None:
    runner, exits = harness.runner(mode)
    # psutil only knows processes it has sampled: give it time to see the escaped one.
    linger = "sleep 2" if mode == "psutil" else ":"
    script = f"""setsid sleep 300 & echo $! > "$OUT/escaped.pid"
while [ "$(ps -o sid= -p $!)" -ne $! ]; do sleep 0.01; done
{linger}
exit 0"""
    harness.start(runner, limited(harness, 1, script))
    escaped = read_pid(harness.out / "escaped.pid")

    assert next_exit(exits, timeout=WAIT).exit_code == 0
    wait_for(lambda: is_gone(escaped))


def test_a_stop_sends_sigterm_once(harness: Harness, mode: str) -> None:
    """The cgroup (or the watched tree) is signalled besides the process group,
    but no process gets the SIGTERM twice: this script leaves on a second one."""
    runner, exits = harness.runner(mode)
    script = """n=0
trap 'n=$((n+1)); echo "TERM $n"; [ $n -ge 2 ] && exit 0' TERM
echo ready
while :; do sleep 0.05; done"""
    harness.start(runner, limited(harness, 1, script))
    wait_for(lambda: "ready" in runner.log_path(1, 1).read_text())

    runner.stop(1, grace_seconds=1)

    report = next_exit(exits)
    assert (report.exit_code, report.stopped) == (128 + signal.SIGKILL, True)
    log = runner.log_path(1, 1).read_text()
    assert "TERM 1" in log
    assert "TERM 2" not in log


def test_cgroups_exist_while_the_instance_runs_and_go_with_it(harness: Harness) -> None:
    runner, exits = harness.runner("cgroup")
    harness.start(
        runner, limited(harness, 1, 'echo started; while [ ! -e "$OUT/go" ]; do sleep 0.02; done')
    )
    harness.start(runner, limited(harness, 2, "sleep 300"))
    read_pid(harness.run_dir(1, 2) / "pid")
    ended = cgroup_dirs(harness, 1)
    stopped = cgroup_dirs(harness, 2)
    assert all(path.is_dir() for path in ended + stopped)
    wrapper = read_pid(harness.run_dir(1, 1) / "pid")
    assert all(wrapper in _members(path) for path in ended)

    (harness.out / "go").touch()
    runner.stop(2, grace_seconds=5)
    reports = {next_exit(exits).instance_id, next_exit(exits).instance_id}

    assert reports == {1, 2}
    assert not any(path.exists() for path in ended + stopped)
    runner.close()
    assert not ended[0].parent.exists()  # the server's parent goes once empty


def _members(path: Path) -> set[int]:
    return {int(pid) for pid in (path / "cgroup.procs").read_text().split()}


# --- reused cgroups (v1) ------------------------------------------------------------

WAIT_FOR_GO_THEN = 'while [ ! -e "$OUT/go{n}" ]; do sleep 0.02; done\n{rest}'


def cgroup_inodes(harness: Harness, instance_id: int) -> list[int]:
    return [path.stat().st_ino for path in cgroup_dirs(harness, instance_id)]


def start_held(harness: Harness, runner: LocalRunner, n: int, rest: str, **limits: int) -> None:
    """Start instance ``n``; it runs ``rest`` once $OUT/go<n> exists."""
    harness.start(runner, limited(harness, n, WAIT_FOR_GO_THEN.format(n=n, rest=rest), **limits))
    read_pid(harness.run_dir(1, n) / "pid")


def test_a_reused_cgroup_does_not_carry_the_last_instances_oom_kill_or_usage(
    harness: Harness,
) -> None:
    runner, exits = harness.runner("cgroup", starters=0)  # the pool alone
    if runner.limits_mode != "cgroup-v1":
        pytest.skip("cgroups are reused on v1 only")
    start_held(harness, runner, 1, ALLOCATE, memory_mib=64)
    first = cgroup_inodes(harness, 1)
    (harness.out / "go1").touch()
    killed = next_exit(exits, timeout=WAIT)
    assert killed.oom_killed

    start_held(harness, runner, 2, "exit 137", memory_mib=64)
    assert cgroup_inodes(harness, 2) == first  # the same cgroups, renamed
    (harness.out / "go2").touch()
    report = next_exit(exits, timeout=WAIT)

    assert report.exit_code == 137
    assert not report.oom_killed
    assert report.peak_memory_bytes is not None and report.peak_memory_bytes < 16 * MIB
    assert report.cpu_seconds is not None and killed.cpu_seconds is not None
    assert report.cpu_seconds < killed.cpu_seconds


def test_a_reused_cgroup_gets_the_new_instances_limits(harness: Harness) -> None:
    runner, exits = harness.runner("cgroup", starters=0)  # the pool alone
    if runner.limits_mode != "cgroup-v1":
        pytest.skip("cgroups are reused on v1 only")
    start_held(harness, runner, 1, "true", cpu=1, memory_mib=64)
    first = cgroup_inodes(harness, 1)
    (harness.out / "go1").touch()
    next_exit(exits)

    start_held(harness, runner, 2, ALLOCATE, cpu=2, memory_mib=512)  # both raised
    assert cgroup_inodes(harness, 2) == first
    memory, cpu = (
        Path(json.loads((harness.run_dir(1, 2) / "resources.json").read_text())["cgroups"][c])
        for c in ("memory", "cpu")
    )
    assert int((memory / "memory.limit_in_bytes").read_text()) == 512 * MIB
    assert int((cpu / "cpu.cfs_quota_us").read_text()) == 2 * int(
        (cpu / "cpu.cfs_period_us").read_text()
    )
    runner.stop(2, grace_seconds=0)
    next_exit(exits, timeout=WAIT)


def test_a_cgroup_left_holding_memory_is_not_reused(harness: Harness, tmp_path: Path) -> None:
    """Page cache the instance left (a file it wrote) would count as the next one's peak."""
    runner, exits = harness.runner("cgroup", starters=0)  # the pool alone
    if runner.limits_mode != "cgroup-v1":
        pytest.skip("cgroups are reused on v1 only")
    write = f"head -c 20000000 /dev/zero > {tmp_path}/cached"
    start_held(harness, runner, 1, write)
    first = cgroup_inodes(harness, 1)
    (harness.out / "go1").touch()
    next_exit(exits)

    start_held(harness, runner, 2, "true")
    assert cgroup_inodes(harness, 2) != first
    (harness.out / "go2").touch()
    report = next_exit(exits)
    assert report.peak_memory_bytes is not None and report.peak_memory_bytes < 16 * MIB


def test_idle_cgroups_of_a_gone_server_are_removed_at_start(harness: Harness) -> None:
    runner, exits = harness.runner("cgroup", starters=0)  # the pool alone
    if runner.limits_mode != "cgroup-v1":
        pytest.skip("cgroups are reused on v1 only")
    run_one(harness, runner, exits, limited(harness, 1, "true"))
    bases = [path.parent for path in cgroup_dirs(harness, 1)]
    mine = sorted(p.name for p in bases[0].iterdir() if p.name.startswith("idle-"))
    assert len(mine) == 1  # the ended instance's cgroups, idle
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = [base / f"idle-{gone.pid}.1-1" for base in bases]
    for path in stale:
        path.mkdir()

    harness.runner("cgroup")  # a new server on the same data directory

    assert not any(path.exists() for path in stale)
    assert all((base / mine[0]).is_dir() for base in bases)  # the live runner's stay
    runner.close()
    assert not any((base / mine[0]).exists() for base in bases)


# --- after a server restart ---------------------------------------------------------

ALLOCATE_ON_GO = 'while [ ! -e "$OUT/go" ]; do sleep 0.02; done\n' + ALLOCATE


def test_an_adopted_instance_is_still_limited_and_measured(harness: Harness, mode: str) -> None:
    old, _ = harness.runner(mode)
    harness.start(old, limited(harness, 1, ALLOCATE_ON_GO, memory_mib=64))
    read_pid(harness.run_dir(1, 1) / "pid")
    old.close()

    new, exits = harness.runner(mode)
    assert new.recover(1, 1).state == "running"
    (harness.out / "go").touch()
    report = next_exit(exits, timeout=WAIT)

    assert report.oom_killed
    assert report.memory_limit_bytes == 64 * MIB
    assert report.peak_memory_bytes is not None and report.peak_memory_bytes >= 50 * MIB
    assert report.cpu_seconds is not None and report.cpu_seconds > 0


def test_an_oom_kill_while_no_server_watched_is_reported_at_recover(harness: Harness) -> None:
    old, _ = harness.runner("cgroup")
    pid = harness.start(old, limited(harness, 1, ALLOCATE_ON_GO, memory_mib=64))
    read_pid(harness.run_dir(1, 1) / "pid")
    dirs = cgroup_dirs(harness, 1)
    old.close()
    (harness.out / "go").touch()
    wait_for(lambda: has_ended(harness.run_dir(1, 1)), timeout=WAIT)
    os.waitpid(pid, 0)  # what init does once the old server is gone

    new, _ = harness.runner("cgroup")
    recovered = new.recover(1, 1)

    assert recovered.state == "exited"
    assert recovered.exit is not None
    assert recovered.exit.oom_killed
    assert recovered.exit.memory_limit_bytes == 64 * MIB
    assert recovered.exit.peak_memory_bytes is not None
    assert not any(path.exists() for path in dirs)


# --- cgroup v2 ----------------------------------------------------------------------


def test_v2_cgroup_mechanics_on_the_unified_tree() -> None:
    """This host's controllers live on v1, but its (controller-less) v2 tree still
    runs the v2 code that needs none: joining, members, cgroup.kill, cpu.stat, removal."""
    _, v2 = _cgroup_mounts()
    if v2 is None:
        pytest.skip("no cgroup v2 tree is mounted")
    path = _dir_of(v2, _own_cgroups().get("", "/")) / f"jobyard-test-{uuid.uuid4().hex[:8]}"
    cgroups = CgroupSet(2, dict.fromkeys(("memory", "cpu", "cpuacct"), path))
    cgroups.create(None)
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    script = f'echo $$ > "$0/cgroup.procs" && exec python3 -c "{busy}time.sleep(300)"'
    with subprocess.Popen(["/bin/sh", "-c", script, str(path)]) as proc:
        try:
            wait_for(lambda: (cgroups.usage().cpu_seconds or 0) >= 0.3)
            assert cgroups.members() == {proc.pid}

            assert cgroups.kill_all()
            assert proc.wait(timeout=WAIT) == -signal.SIGKILL
        finally:
            proc.kill()
    usage = cgroups.usage()
    assert usage.cpu_seconds is not None and usage.cpu_seconds >= 0.3
    assert (usage.oom_kills, usage.peak_memory_bytes) == (None, None)  # no memory controller
    cgroups.remove()
    assert not path.exists()


def test_the_cgroup_join_wait_is_explained_only_where_the_host_has_it(tmp_path: Path) -> None:
    setting = tmp_path / "rcu_expedited"
    setting.write_text("0\n")
    hint = join_wait_hint(setting)
    assert hint is not None and f"echo 1 > {setting}" in hint
    setting.write_text("1\n")
    assert join_wait_hint(setting) is None
    assert join_wait_hint(tmp_path / "absent") is None

"""The local runner against real processes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from jobyard.errors import Conflict
from jobyard.runners._pid_file import has_ended, read_exit_code
from jobyard.runners._pid_file import read_pid as read_runner_pid
from jobyard.runners._starters import READY
from jobyard.runners.base import SCRIPT_PATH, InstanceExit, InstanceLaunch, Limits, Recovered
from jobyard.runners.local import LocalRunner
from tests.support import ignored_login_signals

# Every process a test starts carries this variable, so teardown can find and
# kill it even after it was orphaned or left its process group.
MARK = "JOBYARD_TEST_MARK"
WAIT = 15.0

ExitQueue = queue.Queue[InstanceExit]


class Harness:
    """Runners on one data dir, and the bookkeeping to clean up after them.

    ``limits``: given to every launch. Where the runner limits with cgroup v1, a
    launch with limits is served by a starter waiting in its cgroup (``_starters``),
    one without by the wrapper spawned there and then.
    """

    def __init__(self, tmp_path: Path, limits: Limits | None = None) -> None:
        self.limits = limits
        self.data_dir = tmp_path / "data"
        self.out = tmp_path / "out"  # where scripts leave evidence ($OUT)
        self.out.mkdir()
        self.mark = uuid.uuid4().hex
        self.runners: list[LocalRunner] = []
        self.pids: list[int] = []

    def runner(
        self, resource_limits: str = "auto", starters: int = READY
    ) -> tuple[LocalRunner, ExitQueue]:
        exits: ExitQueue = queue.Queue()
        runner = LocalRunner(self.data_dir, exits.put, resource_limits, starters)
        self.runners.append(runner)
        return runner, exits

    def launch(
        self, task_id: int, instance_id: int, script: str, env: dict[str, str] | None = None
    ) -> InstanceLaunch:
        full_env = {MARK: self.mark, "OUT": str(self.out), **(env or {})}
        argv = ("/bin/sh", SCRIPT_PATH)
        return InstanceLaunch(task_id, instance_id, argv, full_env, script, limits=self.limits)

    def start(self, runner: LocalRunner, launch: InstanceLaunch) -> int:
        pid = runner.start(launch)
        self.pids.append(pid)
        return pid

    def run_dir(self, task_id: int, instance_id: int) -> Path:
        return self.data_dir.resolve() / "tasks" / str(task_id) / str(instance_id)

    def clean_up(self) -> None:
        for runner in self.runners:
            runner.close()
        marked = [p for p in psutil.process_iter(["environ"]) if _has_mark(p, self.mark)]
        for proc in marked:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(marked, timeout=5)
        for pid in self.pids:
            _reap_if_our_child(pid)


def _has_mark(proc: psutil.Process, mark: str) -> bool:
    return (proc.info.get("environ") or {}).get(MARK) == mark


def _reap_if_our_child(pid: int) -> None:
    """Reap a wrapper a closed runner left behind (still a child of this process)."""
    try:
        alive = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return  # a runner reaped it; the number may belong to someone else by now
    if alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # an unreaped child's pid cannot be reused
    os.waitpid(pid, 0)


# "warm": every launch has limits (those of a template by default), so that on a
# cgroup v1 host the instances are handed to starters; elsewhere both are alike.
@pytest.fixture(params=["cold", "warm"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    limits = Limits(cpu=2.0, memory_bytes=512 * 1024 * 1024) if request.param == "warm" else None
    h = Harness(tmp_path, limits)
    try:
        yield h
    finally:
        h.clean_up()


def next_exit(exits: ExitQueue, timeout: float = WAIT) -> InstanceExit:
    return exits.get(timeout=timeout)


def brief(report: InstanceExit) -> InstanceExit:
    """The report without its usage figures, which differ from run to run, nor its
    memory limit, which is the harness's."""
    return dataclasses.replace(
        report, peak_memory_bytes=None, cpu_seconds=None, memory_limit_bytes=None
    )


def wait_for(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        time.sleep(0.01)


def read_pid(path: Path) -> int:
    wait_for(lambda: path.exists() and path.read_text().strip() != "")
    return int(path.read_text().splitlines()[0])


def is_empty_dir(path: Path) -> bool:
    """The work dir after an instance: kept (a deletion per instance is costly), emptied."""
    return path.is_dir() and not any(path.iterdir())


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def log_has(runner: LocalRunner, task_id: int, instance_id: int, text: str) -> Callable[[], bool]:
    path = runner.log_path(task_id, instance_id)
    return lambda: path.exists() and text in path.read_text()


# --- exit codes, environment, working directory, logs ---------------------------


def test_exit_codes_are_reported(harness: Harness) -> None:
    runner, exits = harness.runner()
    harness.start(runner, harness.launch(1, 1, "exit 0"))
    harness.start(runner, harness.launch(1, 2, "exit 3"))

    reported = {e.instance_id: brief(e) for e in (next_exit(exits), next_exit(exits))}

    assert reported == {
        1: InstanceExit(1, 0, stopped=False),
        2: InstanceExit(2, 3, stopped=False),
    }


def test_env_is_exactly_the_launch_env_plus_defaults(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBYARD_SERVER_ONLY", "must not leak")
    runner, exits = harness.runner()
    # Names the wrapper could have used for itself, too.
    mine = {"dir": "d", "n": "7", "code": "c", "unjoined": "u", "jobyard_dir": "j"}
    launch = harness.launch(1, 1, "/usr/bin/env", {"FOO": "bar baz", "LANG": "en_US.UTF-8", **mine})
    harness.start(runner, launch)
    next_exit(exits)

    lines = runner.log_path(1, 1).read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines)
    work = str(harness.run_dir(1, 1) / "work")
    assert env == {
        **launch.env,
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": work,
        "PWD": work,  # set by the shell itself
    }
    assert env["LANG"] == "en_US.UTF-8"  # the launch env overrides a default


def test_cwd_is_a_fresh_work_dir_emptied_after_exit(harness: Harness) -> None:
    runner, exits = harness.runner()
    harness.start(runner, harness.launch(1, 1, "pwd; ls -A | wc -l; touch left-here"))
    assert next_exit(exits).exit_code == 0

    run_dir = harness.run_dir(1, 1)
    cwd, entries = runner.log_path(1, 1).read_text().split()
    assert cwd == str(run_dir / "work")
    assert entries == "0"
    assert is_empty_dir(run_dir / "work")
    left = ["output.log", "pid", "resources.json", "script", "work"]
    assert sorted(p.name for p in run_dir.iterdir()) == left
    pid, ended = (run_dir / "pid").read_text().splitlines()
    assert pid.isdigit() and ended == "exit 0"  # the exit code shares the pid's file


def test_read_only_dirs_in_work_dir_are_removed(harness: Harness) -> None:
    runner, exits = harness.runner()
    script = "mkdir -p ro/sub && touch ro/sub/f && chmod 500 ro/sub ro"
    harness.start(runner, harness.launch(1, 1, script))
    assert next_exit(exits).exit_code == 0

    assert is_empty_dir(harness.run_dir(1, 1) / "work")


def test_a_work_dir_made_read_only_is_removed_whole(harness: Harness) -> None:
    runner, exits = harness.runner()
    harness.start(runner, harness.launch(1, 1, "touch f && chmod 500 ."))
    assert next_exit(exits).exit_code == 0

    work = harness.run_dir(1, 1) / "work"
    assert not work.exists() or is_empty_dir(work)


def test_output_log_interleaves_stdout_and_stderr_live(harness: Harness) -> None:
    runner, exits = harness.runner()
    script = "echo out1; echo err1 >&2; echo out2; sleep 300"
    harness.start(runner, harness.launch(1, 1, script))

    wait_for(log_has(runner, 1, 1, "out1\nerr1\nout2\n"))
    assert exits.empty()  # still running while its output is readable
    runner.stop(1, grace_seconds=5)
    assert next_exit(exits).stopped


# --- stopping and killing the whole tree ------------------------------------------


def test_stop_kills_background_children(harness: Harness) -> None:
    runner, exits = harness.runner()
    script = 'sleep 300 & echo $! > "$OUT/bg.pid"; wait'
    harness.start(runner, harness.launch(1, 1, script))
    background = read_pid(harness.out / "bg.pid")

    runner.stop(1, grace_seconds=5)

    assert brief(next_exit(exits)) == InstanceExit(1, 128 + signal.SIGTERM, stopped=True)
    wait_for(lambda: is_gone(background))


def test_stop_sends_sigkill_after_the_grace_to_what_ignores_sigterm(harness: Harness) -> None:
    runner, exits = harness.runner()
    script = """trap '' TERM; sleep 300 & echo $! > "$OUT/bg.pid"; wait"""
    harness.start(runner, harness.launch(1, 1, script))
    stubborn = read_pid(harness.out / "bg.pid")

    stopped_at = time.monotonic()
    runner.stop(1, grace_seconds=0.5)

    assert brief(next_exit(exits)) == InstanceExit(1, 128 + signal.SIGKILL, stopped=True)
    assert time.monotonic() - stopped_at >= 0.5  # not killed before its grace
    wait_for(lambda: is_gone(stubborn))


def test_stop_reaches_descendants_that_left_the_group(harness: Harness) -> None:
    runner, exits = harness.runner()
    script = 'setsid sleep 300 & echo $! > "$OUT/escaped.pid"; sleep 300 & wait'
    harness.start(runner, harness.launch(1, 1, script))
    escaped = read_pid(harness.out / "escaped.pid")
    wait_for(lambda: os.getpgid(escaped) == escaped)  # setsid has run

    runner.stop(1, grace_seconds=5)

    assert next_exit(exits).stopped
    wait_for(lambda: is_gone(escaped))


def test_stop_lets_a_term_trap_clean_up_before_the_exit_is_reported(harness: Harness) -> None:
    runner, exits = harness.runner()
    script = """trap 'echo done > "$OUT/cleanup"; exit 7' TERM; echo ready; sleep 300 & wait"""
    harness.start(runner, harness.launch(1, 1, script))
    wait_for(log_has(runner, 1, 1, "ready"))

    runner.stop(1, grace_seconds=10)

    assert brief(next_exit(exits)) == InstanceExit(1, 7, stopped=True)
    assert (harness.out / "cleanup").read_text() == "done\n"


def test_stop_right_after_start_ends_the_instance(harness: Harness) -> None:
    runner, exits = harness.runner()
    harness.start(runner, harness.launch(1, 1, "sleep 300"))
    runner.stop(1, grace_seconds=60)

    assert brief(next_exit(exits)) == InstanceExit(1, 128 + signal.SIGTERM, stopped=True)


def test_stop_is_idempotent_and_ignores_unknown_instances(harness: Harness) -> None:
    runner, exits = harness.runner()
    runner.stop(404, grace_seconds=1)
    harness.start(runner, harness.launch(1, 1, "sleep 300"))
    runner.stop(1, grace_seconds=5)
    runner.stop(1, grace_seconds=5)

    assert next_exit(exits).stopped
    runner.stop(1, grace_seconds=5)
    with pytest.raises(queue.Empty):
        exits.get(timeout=0.3)


def test_background_process_left_by_a_finished_script_is_killed(harness: Harness) -> None:
    runner, exits = harness.runner()
    script = 'sleep 300 & echo $! > "$OUT/bg.pid"; exit 0'
    harness.start(runner, harness.launch(1, 1, script))

    assert brief(next_exit(exits)) == InstanceExit(1, 0, stopped=False)
    wait_for(lambda: is_gone(read_pid(harness.out / "bg.pid")))


# --- recovery after a server restart ----------------------------------------------

WAIT_FOR_GO = 'while [ ! -e "$OUT/go" ]; do sleep 0.02; done; exit {code}'


def test_recover_adopts_a_running_instance_and_reports_its_exit(harness: Harness) -> None:
    old, old_exits = harness.runner()
    pid = harness.start(old, harness.launch(1, 1, WAIT_FOR_GO.format(code=5)))
    read_pid(harness.run_dir(1, 1) / "pid")
    old.close()

    new, exits = harness.runner()
    assert new.recover(1, 1) == Recovered("running", pid=pid)
    assert new.recover(1, 1) == Recovered("running", pid=pid)  # not watched twice
    (harness.out / "go").touch()

    assert brief(next_exit(exits)) == InstanceExit(1, 5, stopped=False)
    assert old_exits.empty()
    assert is_empty_dir(harness.run_dir(1, 1) / "work")
    with pytest.raises(queue.Empty):
        exits.get(timeout=0.3)


def test_recover_then_stop_an_adopted_instance(harness: Harness) -> None:
    old, _ = harness.runner()
    harness.start(old, harness.launch(1, 1, "sleep 300 & wait"))
    read_pid(harness.run_dir(1, 1) / "pid")
    old.close()

    new, exits = harness.runner()
    assert new.recover(1, 1).state == "running"
    new.stop(1, grace_seconds=5)

    assert brief(next_exit(exits)) == InstanceExit(1, 128 + signal.SIGTERM, stopped=True)


def test_recover_reports_an_instance_that_exited_unwatched(harness: Harness) -> None:
    old, _ = harness.runner()
    pid = harness.start(old, harness.launch(1, 1, WAIT_FOR_GO.format(code=4)))
    read_pid(harness.run_dir(1, 1) / "pid")
    old.close()
    (harness.out / "go").touch()
    wait_for(lambda: has_ended(harness.run_dir(1, 1)))
    os.waitpid(pid, 0)  # what init does once the old server is gone

    new, exits = harness.runner()
    recovered = new.recover(1, 1)
    assert (recovered.state, recovered.exit_code) == ("exited", 4)
    assert recovered.exit is not None
    assert brief(recovered.exit) == InstanceExit(1, 4, stopped=False)
    with pytest.raises(queue.Empty):
        exits.get(timeout=0.3)


def test_recover_reads_the_exit_file_of_a_wrapper_from_before_the_pid_file_held_it(
    harness: Harness,
) -> None:
    """Instances started by an older server's wrapper keep their code in a file of its
    own; one that ended while no server ran is still recovered with it."""
    runner, exits = harness.runner()
    with subprocess.Popen(["true"]) as gone:
        gone.wait()
    run_dir = harness.run_dir(1, 1)
    (run_dir / "work").mkdir(parents=True)
    (run_dir / "pid").write_text(f"{gone.pid}\n")
    (run_dir / "exit").write_text("4\n")

    recovered = runner.recover(1, 1)

    assert (recovered.state, recovered.exit_code) == ("exited", 4)
    assert exits.empty()


def test_an_exit_line_caught_half_written_is_read_once_complete(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    pid_file.write_text("123\nexit 1")
    assert (read_runner_pid(tmp_path), has_ended(tmp_path)) == (123, True)
    finish = threading.Timer(0.05, lambda: _append(pid_file, "7\n"))
    finish.start()
    try:
        assert read_exit_code(tmp_path) == 17
    finally:
        finish.join()
    pid_file.write_text("")
    assert (read_runner_pid(tmp_path), has_ended(tmp_path)) == (None, False)
    assert read_exit_code(tmp_path) is None


def _append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


def test_recover_without_files_is_gone(harness: Harness) -> None:
    runner, _ = harness.runner()
    assert runner.recover(7, 7) == Recovered("gone")


def test_recover_does_not_adopt_or_kill_an_unrelated_process(harness: Harness) -> None:
    runner, exits = harness.runner()
    with subprocess.Popen(["sleep", "300"], start_new_session=True) as stranger:
        try:
            for instance_id, pid in ((1, os.getpid()), (2, stranger.pid)):
                run_dir = harness.run_dir(1, instance_id)
                run_dir.mkdir(parents=True)
                (run_dir / "pid").write_text(f"{pid}\n")
                assert runner.recover(1, instance_id) == Recovered("gone")
            time.sleep(0.1)
            assert stranger.poll() is None  # its process group was left alone
        finally:
            stranger.kill()
    assert exits.empty()


# --- bookkeeping --------------------------------------------------------------------


def test_many_concurrent_instances_are_each_reported_once(harness: Harness) -> None:
    runner, exits = harness.runner()
    launches = [harness.launch(1, i, f"sleep 0.0{i % 5}; exit {i % 7}") for i in range(50)]
    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(lambda launch: harness.start(runner, launch), launches))

    reported = [next_exit(exits) for _ in launches]

    assert sorted(e.instance_id for e in reported) == list(range(50))
    assert all(e.exit_code == e.instance_id % 7 and not e.stopped for e in reported)
    with pytest.raises(queue.Empty):
        exits.get(timeout=0.3)


@pytest.fixture
def server_ignoring_signals() -> Iterator[None]:
    """As if the server were started under nohup and a shell's ``trap '' INT QUIT``."""
    ignored = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)
    before = {signum: signal.signal(signum, signal.SIG_IGN) for signum in ignored}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_an_instance_starts_with_the_usual_signals_at_their_defaults(
    harness: Harness, server_ignoring_signals: None
) -> None:
    """Ignored signals stay ignored across exec: an instance of a server started under
    nohup would not stop on SIGHUP, nor a script under it on SIGINT or SIGPIPE."""
    runner, exits = harness.runner()
    harness.start(runner, harness.launch(1, 1, 'grep SigIgn /proc/self/status > "$OUT/ignored"'))
    assert next_exit(exits).exit_code == 0
    assert ignored_login_signals((harness.out / "ignored").read_text()) == []
    assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, None)  # still ignored here


def test_starting_an_instance_twice_is_a_conflict(harness: Harness) -> None:
    runner, exits = harness.runner()
    harness.start(runner, harness.launch(1, 1, "exit 0"))
    next_exit(exits)

    with pytest.raises(Conflict):
        runner.start(harness.launch(1, 1, "exit 0"))


def test_remove_task_files_deletes_everything_of_the_task(harness: Harness) -> None:
    runner, exits = harness.runner()
    harness.start(runner, harness.launch(1, 1, "echo hi"))
    harness.start(runner, harness.launch(2, 2, "echo hi"))
    next_exit(exits)
    next_exit(exits)

    runner.remove_task_files(1)
    runner.remove_task_files(1)  # already gone: fine

    assert not harness.run_dir(1, 1).parent.exists()
    assert runner.log_path(2, 2).read_text() == "hi\n"


# --- a shared directory linked into the working directory -------------------------


def test_shared_dir_entries_are_linked_into_the_work_dir(harness: Harness, tmp_path: Path) -> None:
    shared = tmp_path / "package"
    (shared / "lib").mkdir(parents=True)
    (shared / "main.py").write_text("print(open('lib/data.txt').read().strip())\n")
    (shared / "lib" / "data.txt").write_text("from the package\n")
    for path in (shared / "lib", shared):
        path.chmod(0o555)
    runner, exits = harness.runner()
    script = "python3 main.py; test -L main.py && test -L lib && echo linked; touch mine; ls"
    launch = dataclasses.replace(harness.launch(1, 1, script), shared_dir=shared)
    harness.start(runner, launch)

    assert next_exit(exits).exit_code == 0
    assert runner.log_path(1, 1).read_text() == "from the package\nlinked\nlib\nmain.py\nmine\n"
    assert sorted(p.name for p in shared.iterdir()) == ["lib", "main.py"]  # left as it was
    assert (shared / "lib" / "data.txt").read_text() == "from the package\n"
    assert is_empty_dir(harness.run_dir(1, 1) / "work")


def test_a_missing_shared_dir_fails_the_start(harness: Harness, tmp_path: Path) -> None:
    runner, _ = harness.runner()
    launch = dataclasses.replace(harness.launch(1, 1, "exit 0"), shared_dir=tmp_path / "nope")

    with pytest.raises(FileNotFoundError):
        runner.start(launch)


# --- the cleanup command, run once after the instance ends --------------------------


def with_cleanup(launch: InstanceLaunch, out: Path, code: int = 0) -> InstanceLaunch:
    """A cleanup that appends a line to out/cleaned and says so on its stdout."""
    command = 'echo "cleaning up"; echo cleaned >> "$0"; exit "$1"'
    cleanup = ("/bin/sh", "-c", command, str(out / "cleaned"), str(code))
    return dataclasses.replace(launch, cleanup=cleanup)


def cleaned_times(out: Path) -> int:
    path = out / "cleaned"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_cleanup_runs_once_after_a_normal_end(harness: Harness) -> None:
    runner, exits = harness.runner()
    harness.start(runner, with_cleanup(harness.launch(1, 1, "echo work"), harness.out, code=3))

    assert next_exit(exits).exit_code == 0
    wait_for(log_has(runner, 1, 1, "jobyard: cleanup /bin/sh exited with code 3"))
    assert runner.log_path(1, 1).read_text().startswith("work\ncleaning up\n")
    assert cleaned_times(harness.out) == 1
    assert (harness.run_dir(1, 1) / "cleanup.json").exists() is False


def test_cleanup_runs_after_a_stop(harness: Harness) -> None:
    runner, exits = harness.runner()
    harness.start(runner, with_cleanup(harness.launch(1, 1, "sleep 300"), harness.out))
    runner.stop(1, grace_seconds=5)

    assert next_exit(exits).stopped
    wait_for(lambda: cleaned_times(harness.out) == 1)


def test_cleanup_never_holds_up_other_exits(harness: Harness) -> None:
    runner, exits = harness.runner()
    release = harness.out / "release"
    blocking = ("/bin/sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.02; done', str(release))
    first = dataclasses.replace(harness.launch(1, 1, "exit 0"), cleanup=blocking)
    harness.start(runner, first)
    assert next_exit(exits).instance_id == 1

    harness.start(runner, harness.launch(1, 2, "exit 0"))

    assert next_exit(exits).instance_id == 2  # reported while the cleanup still waits
    assert not release.exists()
    release.touch()


def test_cleanup_of_an_instance_that_ended_unwatched_runs_at_recover(harness: Harness) -> None:
    old, _ = harness.runner()
    launch = with_cleanup(harness.launch(1, 1, WAIT_FOR_GO.format(code=0)), harness.out)
    pid = harness.start(old, launch)
    read_pid(harness.run_dir(1, 1) / "pid")
    old.close()
    (harness.out / "go").touch()
    wait_for(lambda: has_ended(harness.run_dir(1, 1)))
    os.waitpid(pid, 0)
    assert cleaned_times(harness.out) == 0  # nobody watched it end

    new, _ = harness.runner()
    assert new.recover(1, 1).state == "exited"
    assert new.recover(1, 1).state == "exited"
    wait_for(lambda: cleaned_times(harness.out) == 1)
    new.close()  # waits for cleanups still running
    assert cleaned_times(harness.out) == 1


def test_cleanup_of_an_adopted_instance_runs_when_it_ends(harness: Harness) -> None:
    old, _ = harness.runner()
    launch = with_cleanup(harness.launch(1, 1, WAIT_FOR_GO.format(code=0)), harness.out)
    harness.start(old, launch)
    read_pid(harness.run_dir(1, 1) / "pid")
    old.close()

    new, exits = harness.runner()
    assert new.recover(1, 1).state == "running"
    (harness.out / "go").touch()

    assert next_exit(exits).exit_code == 0
    wait_for(lambda: cleaned_times(harness.out) == 1)


def test_discard_task_runs_the_cleanup_of_its_instances(harness: Harness) -> None:
    runner, _ = harness.runner()
    harness.start(runner, with_cleanup(harness.launch(1, 1, "sleep 300"), harness.out))
    harness.start(runner, harness.launch(1, 2, "sleep 300"))
    read_pid(harness.run_dir(1, 1) / "pid")
    read_pid(harness.run_dir(1, 2) / "pid")
    runner.close()  # as at startup: a task the database no longer has

    sweeper, exits = harness.runner()
    sweeper.discard_task(1)

    wait_for(lambda: cleaned_times(harness.out) == 1)
    wait_for(lambda: all(is_gone(pid) for pid in harness.pids))
    assert not harness.run_dir(1, 1).parent.exists()
    assert exits.empty()

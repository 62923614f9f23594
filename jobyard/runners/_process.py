"""Process plumbing of the local runner: spawn the wrapper, signal trees, reap.

Every instance runs under a tiny /bin/sh wrapper that is the leader of its own
session and process group, so the group id is the wrapper's pid. The wrapper
records its pid and the script's exit code in the instance's run directory,
which lets a restarted server find (or account for) every instance.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import psutil

from jobyard.runners._pid_file import EXIT_PREFIX, PID_FILE

logger = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WRAPPER_NAME = "jobyard-instance"
STOP_MARKER = "stopping"  # left in the run dir by terminate_tree

# $1 = run dir, $2 = how many cgroup.procs files follow, those files, then the
# instance's argv. Paths travel as arguments, never in the environment, so the
# instance's environment is exactly what it was given.
# - The wrapper joins the instance's cgroups before anything else runs, so
#   every process of the instance is inside; if it cannot, the command never
#   runs (exit 125).
# - The trap runs a command (it does not ignore the signal) so the command
#   starts with default dispositions, and the wrapper outlives a group-wide
#   SIGTERM to wait for the command and record its code.
# - The command starts from a subshell, where caught traps are back to their
#   defaults. A SIGTERM that lands in the forked child before that reset is
#   swallowed by the inherited handler, so the subshell first looks for the
#   marker that terminate_tree leaves before signalling: a stop is never lost
#   nor doubled. (A subshell, not a fresh /bin/sh: one exec less per start.)
# - OLDPWD would leak the server's working directory into the instance.
# - The wrapper's own variables have names in the reserved JOBYARD_ prefix: an
#   instance variable it assigned (say "dir") would reach the command changed.
# - The exit code is appended to the pid file as "exit <code>" (see _pid_file),
#   not written to a file of its own: creating a file is the slowest
#   step an instance's end takes on a file system that skips recently deleted
#   inodes (bench/README.md), and not to a temporary file renamed over it: a
#   rename needs /bin/mv, an exec that cost more than the rest of the wrapper.
#   A reader that finds the line torn retries (see read_exit_code).
_WRAPPER_SCRIPT = f"""\
trap : TERM INT
JOBYARD_WRAPPER_DIR=$1
JOBYARD_WRAPPER_N=$2
shift 2
JOBYARD_WRAPPER_UNJOINED=
while [ "$JOBYARD_WRAPPER_N" -gt 0 ]; do
  {{ echo $$ > "$1"; }} 2>/dev/null || JOBYARD_WRAPPER_UNJOINED=$1
  shift
  JOBYARD_WRAPPER_N=$((JOBYARD_WRAPPER_N - 1))
done
echo $$ > "$JOBYARD_WRAPPER_DIR/{PID_FILE}"
cd "$JOBYARD_WRAPPER_DIR/work" || exit 126
unset OLDPWD
if [ -n "$JOBYARD_WRAPPER_UNJOINED" ]; then
  echo "jobyard: cannot join the instance's cgroup ($JOBYARD_WRAPPER_UNJOINED)" >&2
  JOBYARD_WRAPPER_CODE=125
else
  ( [ -e "$JOBYARD_WRAPPER_DIR/{STOP_MARKER}" ] && exit 143; exec "$@" )
  JOBYARD_WRAPPER_CODE=$?
fi
echo "{EXIT_PREFIX}$JOBYARD_WRAPPER_CODE" >> "$JOBYARD_WRAPPER_DIR/{PID_FILE}"
exit "$JOBYARD_WRAPPER_CODE"
"""

# Signals an instance must start with at their defaults, as after a fresh login.
# A handled signal is reset to its default by exec, an ignored one stays ignored:
# subprocess restores SIGPIPE and SIGXFSZ, which Python ignores, and
# ``handle_ignored_signals`` makes these handled if the server was started with them
# ignored (nohup, a shell's trap '').
RESET_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD)


def handle_ignored_signals() -> None:
    """Turn RESET_SIGNALS the server ignores into handlers that do nothing: still
    ignored here, at their defaults in what the server starts (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in RESET_SIGNALS:
        if signal.getsignal(signum) == signal.SIG_IGN:
            signal.signal(signum, _do_nothing)


def _do_nothing(_signum: int, _frame: Any) -> None:
    pass


def spawn(argv: Sequence[str], env: Mapping[str, str], stdin: int, stdout: int, stderr: int) -> int:
    """Start ``argv`` as the leader of a new session; return its pid, which the caller
    reaps (a pidfd, wait4). ``stdin``, ``stdout``, ``stderr``: descriptors, or
    ``subprocess.DEVNULL``.

    subprocess rather than os.posix_spawn: both vfork, but os.posix_spawn holds the GIL
    until the child has exec'd, and when the cores are busy the child waits for one. In
    the throughput benchmark the spawn threads held the GIL in it 16 % of the time,
    stopping the HTTP handlers and the controller; subprocess lets go of it meanwhile
    (CPython 3.11.4 and later, gh-104372). Descriptors above stderr are closed in the
    child (close_range). The Popen object is let go at once: its ``returncode`` is set,
    so that it neither warns when collected nor lets subprocess reap the child behind
    the caller's back.
    """
    process = subprocess.Popen(
        list(argv),
        env=dict(env),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        close_fds=True,
        start_new_session=True,
        restore_signals=True,
    )
    process.returncode = 0  # reaped by the caller, never by subprocess
    return process.pid


def instance_env(env: Mapping[str, str], home: Path) -> dict[str, str]:
    """The instance's environment: the launch env over a minimal login default."""
    return {"PATH": DEFAULT_PATH, "HOME": str(home), "LANG": "C.UTF-8", **env}


def spawn_wrapper(
    run_dir: Path, argv: Sequence[str], env: Mapping[str, str], join: Sequence[str] = ()
) -> int:
    """Start the wrapper in a new session with output.log as stdout and stderr.

    ``join`` lists the cgroup.procs files the wrapper enters before the command.
    """
    wrapper = [
        "/bin/sh", "-c", _WRAPPER_SCRIPT, WRAPPER_NAME, str(run_dir), str(len(join)), *join, *argv
    ]  # fmt: skip
    log_fd = os.open(run_dir / "output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return spawn(wrapper, env, subprocess.DEVNULL, log_fd, log_fd)
    finally:
        os.close(log_fd)


def is_wrapper_of(pid: int, run_dir: Path) -> bool:
    """True when ``pid`` is a live wrapper of ``run_dir`` (not a reused pid): its command
    line names the run directory, or (a starter, see ``_starters``) it is a wrapper
    whose working directory is the run directory's ``work/``."""
    try:
        process = psutil.Process(pid)
        cmdline = process.cmdline()
        if str(run_dir) in cmdline:
            return True
        return WRAPPER_NAME in cmdline and process.cwd() == str(run_dir / "work")
    except psutil.Error:
        return False


def terminate_tree(pidfd: int, pgid: int, run_dir: Path) -> list[psutil.Process]:
    """SIGTERM the instance's tree, after marking it so a script not yet started never will.

    Returns the descendants that had left the group: they get SIGKILL later even
    if by then they can no longer be found from the wrapper.
    """
    with contextlib.suppress(OSError):
        (run_dir / STOP_MARKER).touch()
    return signal_tree(pidfd, pgid, signal.SIGTERM)


def kill_all(processes: list[psutil.Process]) -> None:
    """SIGKILL each process still alive (psutil checks it is the same process)."""
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def signal_tree(pidfd: int, pgid: int, sig: int) -> list[psutil.Process]:
    """Send ``sig`` to the instance's process group and to descendants that left it.

    The pidfd proves the leader is not yet reaped, so ``pgid`` still names our
    group. Descendants are listed before the group is signalled: once a parent
    dies its children are reparented and can no longer be found.
    """
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return []
    escaped = _escaped_descendants(pgid)
    killpg(pgid, sig)
    for proc in escaped:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
    return escaped


def in_group(pid: int, pgid: int) -> bool:
    """True when ``pid`` is in process group ``pgid``, or gone (nothing to reach)."""
    try:
        return os.getpgid(pid) == pgid
    except OSError:
        return True


def _escaped_descendants(pgid: int) -> list[psutil.Process]:
    """Descendants of the wrapper that moved to another process group (setsid)."""
    try:
        descendants = psutil.Process(pgid).children(recursive=True)
    except psutil.Error:
        return []
    escaped = []
    for proc in descendants:
        with contextlib.suppress(OSError):
            if os.getpgid(proc.pid) != pgid:
                escaped.append(proc)
    return escaped


def killpg(pgid: int, sig: int) -> None:
    """Signal a process group; an empty group is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def kill_leftover_group(pgid: int, run_dir: Path) -> None:
    """SIGKILL what is left in the group of a wrapper we do not (or no longer) own.

    Used for wrappers an earlier server started, which init reaps. A group with
    members keeps its number from being handed out as a new pid, so the group is
    ours unless a live, unrelated process now owns that pid: then leave it be.
    """
    try:
        proc = psutil.Process(pgid)
        reused = proc.status() != psutil.STATUS_ZOMBIE and not is_wrapper_of(pgid, run_dir)
    except psutil.Error:
        reused = False
    if not reused:
        killpg(pgid, signal.SIGKILL)


def reap(pidfd: int) -> int | None:
    """Reap an exited wrapper through its pidfd; its exit code, or None if not our child."""
    try:
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return 128 + result.si_status


def reap_child(pid: int) -> tuple[int | None, resource.struct_rusage | None]:
    """Reap our own exited wrapper: its exit code and what it and its waited-for
    descendants used. Only for a child we spawned and nobody else reaps: its
    unreaped zombie keeps the pid from being reused."""
    try:
        reaped, status, rusage = os.wait4(pid, os.WNOHANG)
    except ChildProcessError:
        return None, None
    if reaped == 0:
        return None, None  # not exited after all
    code = os.waitstatus_to_exitcode(status)
    return (code if code >= 0 else 128 - code), rusage


def run_cleanup(argv: Sequence[str], log_path: Path | None, timeout: float) -> None:
    """Run an instance's cleanup command to its end (SIGKILL after ``timeout``),
    its output appended to the instance's log (discarded without one)."""
    log: BinaryIO | None = None
    with contextlib.suppress(OSError):
        log = log_path.open("ab") if log_path else None
    with log or contextlib.nullcontext():
        problem = _run_to_end(argv, log, timeout)
        if problem:
            logger.warning("cleanup %s %s", argv[0], problem)
            if log is not None:
                log.write(f"jobyard: cleanup {argv[0]} {problem}\n".encode())


def _run_to_end(argv: Sequence[str], log: BinaryIO | None, timeout: float) -> str:
    """What went wrong running ``argv``; empty when it exited 0."""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"was killed after {timeout:.0f} s"
    except OSError as err:
        return f"could not run: {err}"
    return f"exited with code {done.returncode}" if done.returncode else ""


def empty_dir(path: Path) -> None:
    """Remove what ``path`` holds but keep the directory itself.

    Keeping the (usually empty) directory saves a deletion per instance: on
    ext4 without a journal every new inode is allocated past the recently
    deleted ones, so deleting one per instance made every later file
    creation slower.
    """
    try:
        with os.scandir(path) as scan:
            entries = list(scan)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                remove_tree(Path(entry.path))
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
    except FileNotFoundError:
        return
    except OSError:  # made unwritable by the script: remove it whole
        remove_tree(path)


def remove_tree(path: Path) -> None:
    """rm -rf, even of directories a script made read-only; a missing path is fine."""
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        if not path.exists():
            return
    except OSError:
        pass
    # A script may have made directories read-only (Go's module cache does).
    _make_dirs_writable(str(path))
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        logger.warning("cannot fully remove %s", path)


def _make_dirs_writable(path: str) -> None:
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    _make_dirs_writable(entry.path)

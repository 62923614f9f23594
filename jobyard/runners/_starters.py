"""Wrappers started ahead, already inside an idle cgroup set, waiting for an instance.

Joining a cgroup (a process writing its pid to ``cgroup.procs``) takes the kernel's
cgroup threadgroup lock for writing, and taking it waits for an RCU grace period
unless another join took it moments before: 5-20 ms on the benchmark machine, most
of a slow instance start (docs/resources.md). A starter pays that wait while
nothing is waiting for it. When an instance starts, its run directory, environment
and command go down the starter's stdin pipe in one write, as shell assignments;
the starter then does what the wrapper of ``_process`` does. Its cgroup set,
renamed to the instance's and given its limits, was an idle one of the pool's
(cgroup v1, where sets are pooled).

A starter whose server goes away reads end-of-file and exits without running
anything; so does one whose input is cut short (the last line, ``JOBYARD_WRAPPER_READY=1``,
is missing, or a quote is left open). The starter's own variables are not exported,
so the command gets exactly the instance's environment. Starts that find no
starter ready take the cold path, the wrapper of ``_process``: a burst of starts
costs no more than before.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import select
import shlex
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from jobyard.runners._cgroup_pool import CgroupPool, Idle
from jobyard.runners._pid_file import EXIT_PREFIX, PID_FILE
from jobyard.runners._process import STOP_MARKER, WRAPPER_NAME, spawn
from jobyard.runners._refill import Refill
from jobyard.runners.base import Limits

logger = logging.getLogger(__name__)

READY = 2  # starters kept waiting
JOIN_TIMEOUT = 5.0  # seconds a new starter may take to join its cgroups
_PREFIX = "JOBYARD_WRAPPER_"  # the starter's own variables: reserved (spec.py)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# $1 = how many cgroup.procs files follow, then those files. Joins them, says
# so on stdout (a pipe the server reads before it counts the starter as ready:
# a set renamed while a join is under way would fail it), then reads (sources)
# its instance from stdin: the environment as exports, then
# JOBYARD_WRAPPER_DIR, the command as "set --" and JOBYARD_WRAPPER_READY=1. From there on it is
# the cold wrapper of _process (see there for the trap, the subshell and the
# stop marker), except that it changes into work/ before it writes its pid: a
# server that finds the pid file finds the wrapper in work/ (is_wrapper_of).
_STARTER_SCRIPT = f"""\
trap : TERM INT
JOBYARD_WRAPPER_N=$1
shift
while [ "$JOBYARD_WRAPPER_N" -gt 0 ]; do
  {{ echo $$ > "$1"; }} 2>/dev/null || exit 125
  shift
  JOBYARD_WRAPPER_N=$((JOBYARD_WRAPPER_N - 1))
done
unset JOBYARD_WRAPPER_N
echo joined
exec 2>/dev/null >/dev/null
. /dev/stdin
[ "$JOBYARD_WRAPPER_READY" = 1 ] || exit 0
unset JOBYARD_WRAPPER_READY
exec </dev/null >>"$JOBYARD_WRAPPER_DIR/output.log" 2>&1
cd "$JOBYARD_WRAPPER_DIR/work" || exit 126
unset OLDPWD
echo $$ > "$JOBYARD_WRAPPER_DIR/{PID_FILE}"
( [ -e "$JOBYARD_WRAPPER_DIR/{STOP_MARKER}" ] && exit 143; exec "$@" )
JOBYARD_WRAPPER_CODE=$?
echo "{EXIT_PREFIX}$JOBYARD_WRAPPER_CODE" >> "$JOBYARD_WRAPPER_DIR/{PID_FILE}"
exit "$JOBYARD_WRAPPER_CODE"
"""


@dataclass(frozen=True)
class Starter:
    pid: int
    pidfd: int
    pipe: int  # the write end of its stdin
    idle: Idle  # the cgroup set it is in, under an idle name


def can_start_warm(env: Mapping[str, str]) -> bool:
    """Whether a starter can give exactly this environment: names the shell can export,
    and none of its own."""
    return all(_NAME.fullmatch(name) and not name.startswith(_PREFIX) for name in env)


def instance_input(run_dir: Path, argv: Sequence[str], env: Mapping[str, str]) -> bytes:
    """What a starter sources: the instance's environment, run directory and command."""
    lines = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    lines.append(f"JOBYARD_WRAPPER_DIR={shlex.quote(str(run_dir))}")
    lines.append("set -- " + " ".join(shlex.quote(arg) for arg in argv))
    lines.append("JOBYARD_WRAPPER_READY=1")
    return ("\n".join(lines) + "\n").encode()


def hand_over(starter: Starter, data: bytes) -> None:
    """Give the starter its instance; it runs once the pipe is closed."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(starter.pipe, view) :]
    finally:
        os.close(starter.pipe)


class WarmStarters:
    """Keeps ``READY`` starters waiting, each in an idle cgroup set of ``pool``.

    Thread-safe. Starters are made on a thread of their own, after each one
    taken, with the limits of the last start (so that a start mostly finds its
    limits already written).
    """

    def __init__(self, pool: CgroupPool, limits: Limits | None, ready: int = READY) -> None:
        self._pool = pool
        self._ready = ready
        self._limits = limits
        self._lock = threading.Lock()
        self._starters: list[Starter] = []
        self._closed = False
        self._refill = Refill("jobyard-starters", self._needed, self._add_one)

    def take(self, limits: Limits) -> Starter | None:
        """A live starter, one already given these limits if any; None: start cold."""
        with self._lock:
            self._limits = limits
            ready, self._starters = self._starters, []
        live = [s for s in ready if _alive(s) or discard(s)]
        chosen = next((s for s in live if s.idle.limits == limits), live[0] if live else None)
        rest = [s for s in live if s is not chosen]
        with self._lock:
            closed = self._closed
            if not closed:
                self._starters.extend(rest)
        for starter in rest if closed else []:
            discard(starter)  # closed meanwhile
        self._refill.taken()
        return chosen

    def close(self) -> None:
        """Let every waiting starter go (it exits on end-of-file) and remove its cgroups."""
        with self._lock:
            self._closed = True
            starters, self._starters = self._starters, []
        self._refill.close()
        for starter in starters:
            discard(starter)

    def _needed(self) -> bool:
        with self._lock:
            return not self._closed and len(self._starters) < self._ready

    def _add_one(self) -> bool:
        with self._lock:
            limits = self._limits
        try:
            idle = self._pool.take(limits) or self._pool.fresh(limits)
        except OSError as err:
            logger.warning("cannot make a cgroup for a starter: %s", err)
            return False
        try:
            starter = _spawn(idle)
        except OSError as err:
            logger.warning("cannot start a starter: %s", err)
            idle.cgroups.remove_all()
            return False
        with self._lock:
            if not self._closed:
                self._starters.append(starter)
                return True
        discard(starter)
        return False


def _spawn(idle: Idle) -> Starter:
    """Start a starter in ``idle`` and wait until it has joined it."""
    join = idle.cgroups.procs_files()
    argv = ["/bin/sh", "-c", _STARTER_SCRIPT, WRAPPER_NAME, str(len(join)), *join]
    stdin_r, stdin_w = os.pipe()
    joined_r, joined_w = os.pipe()
    try:
        pid = spawn(argv, {}, stdin_r, joined_w, subprocess.DEVNULL)  # env: with the command
    except BaseException:
        for fd in (stdin_w, joined_r):
            os.close(fd)
        raise
    finally:
        for fd in (stdin_r, joined_w):
            os.close(fd)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        os.close(stdin_w)
        os.close(joined_r)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    starter = Starter(pid, pidfd, stdin_w, idle)
    try:
        _wait_joined(joined_r)
    except OSError:
        os.close(stdin_w)
        abandon(starter)
        raise
    finally:
        os.close(joined_r)
    return starter


def _wait_joined(joined: int) -> None:
    """Until the starter says it has joined its cgroups; OSError if it exited instead."""
    ready, _, _ = select.select([joined], [], [], JOIN_TIMEOUT)
    if not ready:
        raise OSError(errno.ETIMEDOUT, "a starter did not join its cgroups in time")
    if not os.read(joined, 64):
        raise OSError(errno.EPERM, "a starter could not join its cgroups")


def _alive(starter: Starter) -> bool:
    try:
        return os.waitid(os.P_PIDFD, starter.pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False


def abandon(starter: Starter) -> None:
    """End a starter whose hand-over failed (its pipe is closed) and reap it."""
    with contextlib.suppress(OSError):  # it ran nothing: nothing to stop gently
        signal.pidfd_send_signal(starter.pidfd, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PIDFD, starter.pidfd, os.WEXITED)
    os.close(starter.pidfd)


def discard(starter: Starter) -> bool:
    """End a starter that will not be used, and remove its cgroups (those still there);
    False, for filtering."""
    os.close(starter.pipe)
    abandon(starter)
    starter.idle.cgroups.remove_all()
    return False

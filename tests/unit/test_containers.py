"""Container images: engine detection, the engine CLI's command line, the launch.

The command line is checked as built, and as run: the generated script runs
under the real /bin/sh against a stand-in engine CLI that records what it was
given (argv and environment), so quoting, the payload mount and where values
travel are checked on a real process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobyard.domain import Instance, InstanceStatus, Reason, Task, TaskStatus, TriggerKind
from jobyard.engine.launches import MIB, CannotLaunch, _image_launch
from jobyard.runners.base import SCRIPT_PATH, InstanceLaunch
from jobyard.runners.containers import (
    PAYLOAD_MOUNT,
    ContainerEngine,
    ContainerRun,
    cleanup_argv,
    detect_engine,
    engine_prefix,
    run_argv,
)
from jobyard.spec import ImageDeployment, parse_spec

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
PODMAN = ContainerEngine("podman", "/usr/bin/podman", "podman 4.3.1", "jobyard-0123abcd")
DOCKER = ContainerEngine("docker", "/usr/bin/docker", "docker 28.2.2", "jobyard-0123abcd")
NO_ENGINE = ContainerEngine(None, None, "podman is not installed (not found on PATH)")


def image_spec(**extra: Any) -> Any:
    deployment = {
        "type": "image",
        "image": "registry.example.com/team/job:1.2",
        "command": ["python", "-m", "job"],
        "args": ["--day", "2026-12-04"],
        **extra.pop("deployment", {}),
    }
    return parse_spec({"name": "img", "deployment": deployment, **extra})


def make_task(**extra: Any) -> Task:
    fields: dict[str, Any] = dict(
        id=7, template_id="x", namespace="default", template_name="img", template_version=1,
        trigger=TriggerKind.MANUAL, status=TaskStatus.RUNNING, reason=None, message=None,
        overrides={}, instance_count=1, scheduled_time=None, event_id=None,
        created_at=NOW, started_at=NOW, finished_at=None, ending_reason=None, ending_message=None,
    )  # fmt: skip
    fields.update(extra)
    return Task(**fields)


def make_instance() -> Instance:
    return Instance(
        id=42, task_id=7, index=0, attempt=0, status=InstanceStatus.PENDING, reason=None,
        message=None, exit_code=None, pid=None, shards=[], not_before=None, created_at=NOW,
        started_at=None, finished_at=None, stop_requested=False,
    )  # fmt: skip


def launch_of(spec: Any, engine: ContainerEngine = PODMAN, **task: Any) -> Any:
    assert isinstance(spec.deployment, ImageDeployment)
    return _image_launch(spec, spec.deployment, make_task(**task), make_instance(), engine)


def value_after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


# -- the engine CLI's command line ------------------------------------------------------------


def test_run_argv_maps_name_pull_policy_resources_env_and_labels() -> None:
    run = ContainerRun(
        name="jobyard-0123abcd-42",
        image="localhost/job:1",
        pull_policy="IfNotPresent",
        env_names=("GREETING", "JOBYARD_TASK_ID"),
        cpu=0.5,
        memory_bytes=256 * MIB,
        labels={"jobyard.task": "7", "jobyard.instance": "42"},
    )
    argv = run_argv(PODMAN, run)
    assert argv[:3] == ["/usr/bin/podman", "run", "--rm"]
    assert value_after(argv, "--name") == ["jobyard-0123abcd-42"]
    assert "--pull=missing" in argv
    assert value_after(argv, "--cpus") == ["0.5"]
    assert value_after(argv, "--memory") == [f"{256 * MIB}b"]
    assert value_after(argv, "--memory-swap") == [f"{256 * MIB}b"]  # no swap
    # Names only: the values come from the CLI's environment.
    assert value_after(argv, "--env") == ["GREETING", "JOBYARD_TASK_ID"]
    assert value_after(argv, "--label") == ["jobyard.instance=42", "jobyard.task=7"]
    # The image and its command come after the options (see run_script).
    assert "localhost/job:1" not in argv


@pytest.mark.parametrize(
    ("policy", "flag"),
    [("Always", "--pull=always"), ("IfNotPresent", "--pull=missing"), ("Never", "--pull=never")],
)
def test_each_pull_policy_has_its_flag(policy: str, flag: str) -> None:
    argv = run_argv(DOCKER, ContainerRun(name="n", image="i", pull_policy=policy))
    assert [arg for arg in argv if arg.startswith("--pull")] == [flag]


def test_whole_cores_and_no_limits() -> None:
    whole = run_argv(PODMAN, ContainerRun(name="n", image="i", cpu=2.0))
    assert value_after(whole, "--cpus") == ["2"]
    bare = run_argv(PODMAN, ContainerRun(name="n", image="i"))
    assert not {"--cpus", "--memory", "--memory-swap", "--env"} & set(bare)


def test_cleanup_removes_the_container_at_once() -> None:
    shell, flag, _, name, *rm = cleanup_argv(PODMAN, "c1")
    assert (shell, flag, name) == ("/bin/sh", "-c", "podman")
    assert rm == ["/usr/bin/podman", "rm", "--force", "--time", "0", "c1"]
    # docker rm --force kills at once and knows no --time.
    assert cleanup_argv(DOCKER, "c1")[4:] == ("/usr/bin/docker", "rm", "--force", "c1")


@pytest.mark.parametrize(
    ("printed", "code", "logged"),
    [
        ("c1", 0, "jobyard: container c1 outlived podman run; removed it\n"),
        ("", 0, ""),  # already gone: nothing to say
        ("", 3, ""),  # the engine's own error (stderr) is all there is
    ],
)
def test_cleanup_says_when_it_had_to_remove_a_container(
    tmp_path: Path, printed: str, code: int, logged: str
) -> None:
    cli = tmp_path / "podman"
    cli.write_text(f"#!/bin/sh\n[ -z '{printed}' ] || echo '{printed}'\nexit {code}\n")
    cli.chmod(0o755)
    engine = ContainerEngine("podman", str(cli), "stand-in")
    done = subprocess.run(cleanup_argv(engine, "c1"), capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (code, logged)


def test_no_engine_builds_no_command() -> None:
    with pytest.raises(ValueError, match="no container engine"):
        run_argv(NO_ENGINE, ContainerRun(name="n", image="i"))
    with pytest.raises(ValueError, match="no container engine"):
        cleanup_argv(NO_ENGINE, "n")


def test_container_names_carry_the_server_prefix(tmp_path: Path) -> None:
    prefix = engine_prefix(tmp_path)
    assert prefix.startswith("jobyard-") and len(prefix) == len("jobyard-") + 8
    assert engine_prefix(tmp_path / "." / "") == prefix  # the resolved path counts
    assert engine_prefix(tmp_path / "other") != prefix
    assert ContainerEngine("podman", "/p", "", prefix).container_name(42) == f"{prefix}-42"


# -- the script, run by the real /bin/sh -------------------------------------------------------


@pytest.fixture
def recording_engine(tmp_path: Path) -> tuple[ContainerEngine, Path]:
    """A stand-in engine CLI: it writes its argv (NUL-separated) and environment."""
    record = tmp_path / "record"
    cli = tmp_path / "podman"
    cli.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > {record}.argv\nenv -0 > {record}.env\n")
    cli.chmod(0o755)
    return ContainerEngine("podman", str(cli), "stand-in", "jobyard-test"), record


def run_recorded(
    engine: ContainerEngine, record: Path, launch: InstanceLaunch, extra_env: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """Run the launch as the local runner would: its script under /bin/sh, its env."""
    assert launch.script is not None
    script = record.parent / "script"
    script.write_text(launch.script)
    argv = [str(script) if arg == SCRIPT_PATH else arg for arg in launch.argv]
    env = {"PATH": "/usr/bin:/bin", **launch.env, **extra_env}
    subprocess.run(argv, env=env, check=True, timeout=30)
    args = Path(f"{record}.argv").read_bytes().decode().split("\0")[:-1]
    pairs = Path(f"{record}.env").read_bytes().decode().split("\0")[:-1]
    return args, dict(pair.split("=", 1) for pair in pairs)


def test_values_travel_in_the_environment_never_in_the_command_line(
    recording_engine: tuple[ContainerEngine, Path],
) -> None:
    engine, record = recording_engine
    secret = "s3cr$t 'quoted' \"double\" `tick` \\ and\nnewline"
    spec = image_spec(
        env=[{"name": "API_KEY", "value": secret}, {"name": "GREETING", "value": "hello world"}],
        resources={"cpu": 1.5, "memory_mb": 64},
        deployment={"args": ["two words", "$HOME", "it's"], "pull_policy": "Never"},
    )
    launch = launch_of(spec, engine)
    assert secret not in launch.script and "hello world" not in launch.script
    argv, env = run_recorded(engine, record, launch, {})
    assert not any(secret in arg or "hello world" in arg for arg in argv)
    assert env["API_KEY"] == secret
    assert env["GREETING"] == "hello world"
    assert value_after(argv, "--env") == sorted(launch.env)
    assert {"API_KEY", "GREETING", "JOBYARD_TASK_ID", "JOBYARD_INSTANCE_INDEX"} <= set(
        value_after(argv, "--env")
    )
    assert "--pull=never" in argv
    assert value_after(argv, "--cpus") == ["1.5"]
    assert value_after(argv, "--memory") == [f"{64 * MIB}b"]
    assert value_after(argv, "--name") == ["jobyard-test-42"]
    assert "--volume" not in argv  # no payload
    # The image, then its command and args, last and verbatim.
    image_at = argv.index("registry.example.com/team/job:1.2")
    assert argv[image_at + 1 :] == ["python", "-m", "job", "two words", "$HOME", "it's"]


def test_the_payload_file_is_mounted_read_only(
    recording_engine: tuple[ContainerEngine, Path], tmp_path: Path
) -> None:
    engine, record = recording_engine
    payload_file = tmp_path / "run dir" / "payload.json"
    launch = launch_of(image_spec(), engine, payload={"body": "{}"})
    assert launch.payload is not None
    argv, _ = run_recorded(engine, record, launch, {"JOBYARD_PAYLOAD_FILE": str(payload_file)})
    assert value_after(argv, "--volume") == [f"{payload_file}:{PAYLOAD_MOUNT}:ro"]
    # Inside, the variable names the mounted file; later --env wins over the inherited one.
    assert value_after(argv, "--env")[-1] == f"JOBYARD_PAYLOAD_FILE={PAYLOAD_MOUNT}"
    assert argv.index("--volume") < argv.index("registry.example.com/team/job:1.2")


# -- from a template to a launch -----------------------------------------------------------------


def test_an_image_launch_holds_no_limits_of_its_own_and_cleans_up() -> None:
    launch = launch_of(image_spec(resources={"cpu": 0.25, "memory_mb": 128}))
    assert isinstance(launch, InstanceLaunch)
    # The container holds the limits; the engine CLI around it must not be held to them.
    assert launch.limits is None
    assert launch.argv == ("/bin/sh", SCRIPT_PATH)
    assert launch.cleanup == cleanup_argv(PODMAN, "jobyard-0123abcd-42")
    assert launch.cleanup[-1] == "jobyard-0123abcd-42"
    assert launch.script is not None
    assert f"--memory {128 * MIB}b" in launch.script
    assert "--cpus 0.25" in launch.script
    assert "--label jobyard.task=7 " in launch.script


def test_a_command_override_replaces_command_and_args() -> None:
    launch = launch_of(image_spec(), overrides={"command": ["sh", "-c", "echo hi"]})
    assert launch.script.rstrip().endswith("registry.example.com/team/job:1.2 sh -c 'echo hi'")


def test_without_an_engine_the_instance_cannot_launch() -> None:
    result = launch_of(image_spec(), NO_ENGINE)
    assert result == CannotLaunch(
        Reason.NO_CONTAINER_RUNTIME,
        "no container engine: podman is not installed (not found on PATH)",
    )


# -- detection, with the real CLIs where this host has them ---------------------------------------


def test_engine_none_is_off_by_configuration() -> None:
    engine = detect_engine("none")
    assert not engine.works
    assert engine.report() == {
        "engine": None,
        "detail": "disabled by configuration (container engine: none)",
    }


def test_an_unknown_choice_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, podman, docker, none"):
        detect_engine("lxc")


def test_no_engine_on_path_says_so_for_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    engine = detect_engine("auto")
    assert not engine.works
    assert engine.detail == (
        "podman is not installed (not found on PATH); docker is not installed (not found on PATH)"
    )


def test_a_docker_cli_without_its_engine_does_not_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not installed on this host")
    probe = subprocess.run([docker, "info"], capture_output=True, timeout=30)
    if probe.returncode == 0:
        pytest.skip("a docker engine answers on this host")
    (tmp_path / "docker").symlink_to(docker)
    monkeypatch.setenv("PATH", str(tmp_path))
    engine = detect_engine("docker")
    assert not engine.works
    assert engine.detail.startswith(
        "docker is installed but its engine does not answer (docker info:"
    )


def test_an_engine_that_hangs_does_not_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "podman").write_text("#!/bin/sh\nexec sleep 30\n")
    (tmp_path / "podman").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    engine = detect_engine("podman", timeout=0.5)
    assert not engine.works
    assert engine.detail == (
        "podman is installed but its engine does not answer (podman info: no answer in 0.5 s)"
    )


def test_a_working_podman_is_found() -> None:
    podman = shutil.which("podman")
    if podman is None:
        pytest.skip("podman is not installed on this host (make podman installs it)")
    probe = subprocess.run([podman, "info"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"podman info fails here: {probe.stderr.strip()}")
    engine = detect_engine("auto", prefix="jobyard-x")
    assert engine.works
    assert (engine.name, engine.path, engine.prefix) == ("podman", podman, "jobyard-x")
    assert engine.detail.startswith("podman ") and "runtime" in engine.detail

"""End-to-end: code packages over the REST API and the CLI, with real packages.

Every package is built here: a Python package whose requirements.txt installs
``six`` from PyPI, a jar compiled with the JDK's javac, a node package whose
lockfile pins ``is-number`` from the npm registry, a static C binary from gcc.
Each runs on a real ``jobyard server``. Upload, listing and deletion run on both
databases (the ``server`` fixture); the stacks share one SQLite server to keep
time down. A test skips (saying why) only when a tool or registry it needs is
not there.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.test_archives import make_tar, make_zip, tar_member
from tests.support import (
    JobyardServer,
    processes_using,
    start_server,
    stop_server,
    wait_for,
)

MIB = 1024 * 1024
PACKAGE_LIMIT = "8MiB"
JOBYARD = Path(sys.executable).parent / "jobyard"
PREPARE_TIMEOUT = 240.0  # a venv with pip, or npm ci, over the network

# -- building packages ----------------------------------------------------------------


def unique() -> str:
    """Put in a package to give it bytes (and a digest) of its own."""
    return uuid.uuid4().hex


def zip_of(path: Path, files: Mapping[str, str | bytes], executable: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            mode = 0o755 if name in executable else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.create_system = 3
            data = content.encode() if isinstance(content, str) else content
            archive.writestr(info, data, zipfile.ZIP_DEFLATED)
    return path


def tar_gz_of(
    path: Path, files: Mapping[str, str | bytes], executable: tuple[str, ...] = ()
) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o755 if name in executable else 0o644
            archive.addfile(member, io.BytesIO(data))
    return path


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def post_file(
    server: JobyardServer, path: Path, namespace: str = "default", filename: str | None = None
) -> httpx.Response:
    with path.open("rb") as file:
        files = {"file": (filename or path.name, file, "application/octet-stream")}
        return server.client.post(f"/api/v1/namespaces/{namespace}/packages", files=files)


def upload(
    server: JobyardServer,
    path: Path,
    namespace: str = "default",
    expect: int = 201,
    filename: str | None = None,
) -> Any:
    response = post_file(server, path, namespace, filename)
    assert response.status_code == expect, response.text
    return response.json()


def package_spec(
    name: str, digest: str, stack: str, command: str = "", **extra: Any
) -> dict[str, Any]:
    deployment: dict[str, Any] = {"type": "package", "package": digest, "stack": stack}
    if command:
        deployment["command"] = command
    if "args" in extra:
        deployment["args"] = extra.pop("args")
    spec: dict[str, Any] = {"name": name, "deployment": deployment, "retry_backoff": 0}
    spec.update(extra)
    return spec


def run_to_end(server: JobyardServer, name: str, timeout: float = PREPARE_TIMEOUT) -> Any:
    task = server.run(name)
    return server.wait_task(task["id"], timeout=timeout)


def only_log(server: JobyardServer, task_id: int) -> str:
    instances = server.instances(task_id)
    assert len(instances) == 1, instances
    return server.log(instances[0]["id"])


def reasons(server: JobyardServer, task_id: int) -> list[str]:
    """The task's event reasons, oldest first."""
    return [e["reason"] for e in reversed(server.events(task_id=task_id, limit=200))]


def package_events(server: JobyardServer, digest: str, reason: str) -> list[Any]:
    found = server.events(source_type="package", reason=reason, limit=200)
    return [e for e in found if e["source_name"] == digest]


def stored(server: JobyardServer) -> dict[str, list[str]]:
    """What the package directories hold: blobs, half-received uploads."""
    root = server.data_dir / "packages"
    return {
        part: sorted(p.name for p in (root / part).iterdir()) if (root / part).is_dir() else []
        for part in ("blobs", "uploads")
    }


def listed(server: JobyardServer, namespace: str = "default") -> list[Any]:
    found = server.api("GET", f"/namespaces/{namespace}/packages", expect=200)
    assert isinstance(found, list)
    return found


def prepare_headers(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("== ") and "preparing" in line]


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobyardServer]:
    """One SQLite server for the stacks, with a small package size limit."""
    data_dir = tmp_path_factory.mktemp("packages")
    server = start_server(data_dir, extra_args=["--max-package-size", PACKAGE_LIMIT])
    try:
        yield server
    finally:
        stop_server(server)
        wait_for(lambda: not processes_using(data_dir), timeout=20)


@pytest.fixture(scope="module")
def pypi(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip when PyPI cannot hand out six (the dependency the Python package installs)."""
    python = shutil.which("python3")
    if python is None:
        pytest.skip("python3 is not on PATH")
    target = tmp_path_factory.mktemp("pip")
    command = [python, "-m", "pip", "download", "--no-deps", "-d", str(target), "six==1.16.0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    if result.returncode != 0:
        pytest.skip(f"pip download six failed, PyPI unreachable? {result.stderr[-300:]}")


def python_package(tmp_path: Path, requirements: str | None, extra: str = "") -> Path:
    main = (
        "import os, sys\n"
        "import six\n"
        "print('six', six.__version__)\n"
        "print('venv', os.environ.get('VIRTUAL_ENV', '-'))\n"
        "print('package dir', os.environ['JOBYARD_PACKAGE_DIR'])\n"
        "print('data', open('data/greeting.txt').read().strip())\n"
        "open('out.txt', 'w').write('the working directory is writable')\n"
        "print('wrote', open('out.txt').read())\n"
        "print('args', sys.argv[1:])\n"
    )
    files = {"main.py": main, "data/greeting.txt": f"hello from the package {extra}"}
    if requirements is not None:
        files["requirements.txt"] = requirements
    return zip_of(tmp_path / "app.zip", files)


# -- upload, list, delete (both databases) --------------------------------------------------


def test_upload_is_content_addressed_listed_and_deleted(
    server: JobyardServer, tmp_path: Path
) -> None:
    path = zip_of(tmp_path / "app.zip", {"main.py": f"print('{unique()}')\n"})
    first = upload(server, path, expect=201)
    digest = sha256_of(path)
    assert first["digest"] == digest
    assert (first["filename"], first["kind"], first["size"]) == (
        "app.zip",
        "zip",
        path.stat().st_size,
    )
    assert first["used_by"] == []
    # The same bytes again, even under another name: the same package, 200.
    again = upload(server, path, expect=200, filename="copy.zip")
    assert (again["digest"], again["filename"]) == (digest, "app.zip")
    assert [p["digest"] for p in listed(server)] == [digest]
    hex_digest = digest.removeprefix("sha256:")
    assert (
        server.api("GET", f"/namespaces/default/packages/{hex_digest}", expect=200)["digest"]
        == digest
    )
    assert stored(server) == {"blobs": [hex_digest], "uploads": []}

    server.create_template(package_spec("app", digest, "python", "python main.py"))
    assert listed(server)[0]["used_by"] == [{"template": "app", "version": 1}]
    refused = server.client.delete(f"/api/v1/namespaces/default/packages/{digest}")
    assert refused.status_code == 409
    assert "still used by template 'app' (version 1)" in refused.json()["message"]
    assert [p["digest"] for p in listed(server)] == [digest]

    server.api("DELETE", "/namespaces/default/templates/app", expect=204)
    server.api("DELETE", f"/namespaces/default/packages/{digest}", expect=204)
    server.api("GET", f"/namespaces/default/packages/{digest}", expect=404)
    assert listed(server) == []
    assert stored(server)["blobs"] == []
    uploaded = package_events(server, digest, "PackageUploaded")
    deleted = package_events(server, digest, "PackageDeleted")
    assert len(uploaded) == 1 and len(deleted) == 1
    assert uploaded[0]["source_type"] == "package"


def test_a_template_may_deploy_only_a_package_of_its_namespace(
    server: JobyardServer, tmp_path: Path
) -> None:
    ghost = "sha256:" + "ab" * 32
    missing = server.client.post(
        "/api/v1/namespaces/default/templates", json=package_spec("ghost", ghost, "binary")
    )
    assert missing.status_code == 422
    assert f"package {ghost} is not uploaded in namespace 'default'" in missing.json()["message"]
    server.api("GET", "/namespaces/default/templates/ghost", expect=404)

    server.api("POST", "/namespaces", expect=201, json={"name": "other"})
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\necho {unique()}\n")
    digest = upload(server, script, namespace="other")["digest"]
    elsewhere = server.client.post(
        "/api/v1/namespaces/default/templates", json=package_spec("job", digest, "binary")
    )
    assert elsewhere.status_code == 422
    server.create_template(package_spec("job", digest, "binary"), namespace="other")

    # An edit that names a missing package stores no version.
    edit = server.client.put(
        "/api/v1/namespaces/other/templates/job", json=package_spec("job", ghost, "binary")
    )
    assert edit.status_code == 422
    versions = server.api("GET", "/namespaces/other/templates/job/versions", expect=200)
    assert len(versions) == 1
    # Another namespace having the same bytes does not free the package here.
    upload(server, script, namespace="default")
    server.api("DELETE", f"/namespaces/default/packages/{digest}", expect=204)
    assert server.client.delete(f"/api/v1/namespaces/other/packages/{digest}").status_code == 409
    assert stored(server)["blobs"] == [digest.removeprefix("sha256:")]
    # A namespace goes only once its packages have gone.
    server.api("DELETE", "/namespaces/other/templates/job", expect=204)
    kept = server.client.delete("/api/v1/namespaces/other")
    assert kept.status_code == 409
    assert "namespace 'other' still has 1 package; delete them first" in kept.json()["message"]
    server.api("DELETE", f"/namespaces/other/packages/{digest}", expect=204)
    server.api("DELETE", "/namespaces/other", expect=204)
    assert stored(server)["blobs"] == []


def test_stacks_that_cannot_run_a_package_are_refused(
    server: JobyardServer, tmp_path: Path
) -> None:
    archive = upload(server, tar_gz_of(tmp_path / "tool.tar.gz", {"bin/tool": "#!/bin/sh\n"}))
    binary = server.client.post(
        "/api/v1/namespaces/default/templates",
        json=package_spec("tool", archive["digest"], "binary"),
    )
    assert binary.status_code == 422
    assert "needs a command naming the executable" in binary.json()["message"]
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    single = upload(server, script)
    java = server.client.post(
        "/api/v1/namespaces/default/templates", json=package_spec("j", single["digest"], "java")
    )
    assert java.status_code == 422
    assert "use the binary stack" in java.json()["message"]


# -- refusals that store nothing ------------------------------------------------------------


def test_bad_uploads_are_400_and_store_nothing(shared: JobyardServer, tmp_path: Path) -> None:
    before = (listed(shared), stored(shared))
    not_multipart = shared.client.post(
        "/api/v1/namespaces/default/packages",
        content=b"PK\x03\x04",
        headers={"content-type": "application/zip"},
    )
    assert not_multipart.status_code == 400
    assert "multipart/form-data in a field named 'file'" in not_multipart.json()["message"]
    wrong_field = shared.client.post(
        "/api/v1/namespaces/default/packages", files={"upload": ("a.zip", b"PK\x03\x04")}
    )
    assert wrong_field.status_code == 400
    assert "no file in a field named 'file'" in wrong_field.json()["message"]
    notes = tmp_path / "notes.txt"
    notes.write_text("just text")
    text = post_file(shared, notes)
    assert text.status_code == 400
    assert "'notes.txt' is not a kind of package jobyard accepts" in text.json()["message"]
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"this is no zip")
    assert "it is not a zip archive" in post_file(shared, fake).json()["message"]
    nowhere = post_file(shared, notes, namespace="nowhere")
    assert nowhere.status_code == 404
    assert (listed(shared), stored(shared)) == before


def _traversal_zip(path: Path) -> Path:
    return make_zip(path, [("main.py", b"x", 0), ("../../evil.sh", b"boom", 0)])


def _absolute_tar(path: Path) -> Path:
    return make_tar(path, [tar_member("/etc/cron.d/evil")], {"/etc/cron.d/evil": b"boom"})


def _symlink_zip(path: Path) -> Path:
    return make_zip(path, [("secrets", b"../../../../etc", stat.S_IFLNK | 0o777)])


def _symlink_tar(path: Path) -> Path:
    return make_tar(path, [tar_member("shadow", tarfile.SYMTYPE, "/etc/shadow")], {})


def _device_tar(path: Path) -> Path:
    member = tar_member("dev/sda", tarfile.BLKTYPE)
    member.devmajor, member.devminor = 8, 0
    return make_tar(path, [member], {})


def _fifo_tar(path: Path) -> Path:
    return make_tar(path, [tar_member("pipe", tarfile.FIFOTYPE)], {})


def _bomb_zip(path: Path) -> Path:
    return make_zip(path, [("zeros.bin", bytes(64 * MIB), 0)])


def _escaping_jar(path: Path) -> Path:
    return make_zip(path, [("META-INF/MANIFEST.MF", b"x", 0), ("../x.class", b"x", 0)])


ATTACKS = [
    ("traversal.zip", _traversal_zip, "entry '../../evil.sh' escapes the package"),
    ("absolute.tar.gz", _absolute_tar, "entry '/etc/cron.d/evil' is an absolute path"),
    ("link.zip", _symlink_zip, "entry 'secrets' is a link to '../../../../etc', outside"),
    ("link.tgz", _symlink_tar, "is a link to the absolute path '/etc/shadow'"),
    ("device.tar.gz", _device_tar, "entry 'dev/sda' is a device file"),
    ("fifo.tar.gz", _fifo_tar, "entry 'pipe' is a FIFO"),
    ("bomb.zip", _bomb_zip, "would expand more than 100 times"),
    ("escape.jar", _escaping_jar, "entry '../x.class' escapes the package"),
]


@pytest.mark.parametrize(("filename", "build", "words"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_archive_attacks_are_400_and_store_nothing(
    shared: JobyardServer, tmp_path: Path, filename: str, build: Any, words: str
) -> None:
    before = (listed(shared), stored(shared))
    path = build(tmp_path / filename)
    response = post_file(shared, path)
    assert response.status_code == 400, response.text
    assert words in response.json()["message"]
    assert (listed(shared), stored(shared)) == before


def test_an_upload_over_the_limit_is_413_and_stores_nothing(
    shared: JobyardServer, tmp_path: Path
) -> None:
    before = (listed(shared), stored(shared))
    big = tmp_path / "big.zip"
    big.write_bytes(b"PK\x03\x04" + os.urandom(9 * MIB))
    response = post_file(shared, big)
    assert response.status_code == 413
    assert "larger than 8 MiB" in response.json()["message"]
    assert (listed(shared), stored(shared)) == before


# -- python ---------------------------------------------------------------------------------


def test_python_package_builds_its_virtual_environment_once(
    shared: JobyardServer, tmp_path: Path, pypi: None
) -> None:
    path = python_package(tmp_path, "six==1.16.0\n", unique())
    digest = upload(shared, path)["digest"]
    hex_digest = digest.removeprefix("sha256:")
    spec = package_spec("py", digest, "python", "python main.py --fast", args=["two words"])
    shared.create_template(spec)
    task = run_to_end(shared, "py")
    assert task["status"] == "succeeded", task
    log = only_log(shared, task["id"])
    unpacked = shared.data_dir / "packages" / "unpacked" / hex_digest
    assert "six 1.16.0" in log
    assert f"venv {shared.data_dir / 'packages' / 'prepared' / hex_digest}/venv-python3." in log
    assert f"package dir {unpacked}" in log
    assert "data hello from the package" in log
    assert "wrote the working directory is writable" in log
    assert "args ['--fast', 'two words']" in log
    # Preparing was its own step, with its own events and log.
    steps = reasons(shared, task["id"])
    assert steps.index("PreparingPackage") < steps.index("PackagePrepared")
    assert steps.index("PackagePrepared") < steps.index("InstanceStarted")
    prepare_log = shared.api("GET", f"/namespaces/default/packages/{digest}/log", expect=200)
    assert "-m venv" in prepare_log and "Successfully installed six" in prepare_log
    # The package is shared read-only; the next run needs no preparation.
    assert stat.S_IMODE((unpacked / "main.py").stat().st_mode) & 0o222 == 0
    assert stat.S_IMODE(unpacked.stat().st_mode) & 0o222 == 0
    second = run_to_end(shared, "py")
    assert second["status"] == "succeeded"
    assert "PreparingPackage" not in reasons(shared, second["id"])
    assert (
        len(prepare_headers(shared.api("GET", f"/namespaces/default/packages/{digest}/log"))) == 1
    )


def test_concurrent_instances_of_one_package_prepare_it_once(
    shared: JobyardServer, tmp_path: Path, pypi: None
) -> None:
    path = python_package(tmp_path, "six==1.16.0\n", unique())
    digest = upload(shared, path)["digest"]
    shared.create_template(package_spec("py-twice", digest, "python", "python main.py", replicas=2))
    tasks = [shared.run("py-twice"), shared.run("py-twice")]
    for task in tasks:
        ended = shared.wait_task(task["id"], timeout=PREPARE_TIMEOUT)
        assert ended["status"] == "succeeded", ended
    assert len(package_events(shared, digest, "PackagePrepared")) == 1
    prepare_log = shared.api("GET", f"/namespaces/default/packages/{digest}/log", expect=200)
    assert len(prepare_headers(prepare_log)) == 1
    assert prepare_log.count("Successfully installed six") == 1


def test_python_package_without_requirements_runs_on_the_system_python(
    shared: JobyardServer, tmp_path: Path
) -> None:
    main = (
        "import os, sys\nprint('plain', os.environ.get('VIRTUAL_ENV', 'no venv'), sys.argv[1:])\n"
    )
    path = tar_gz_of(tmp_path / "plain.tar.gz", {"main.py": main, "id.txt": unique()})
    digest = upload(shared, path)["digest"]
    shared.create_template(package_spec("plain", digest, "python", "python3 main.py", args=["a"]))
    task = run_to_end(shared, "plain")
    assert task["status"] == "succeeded", task
    assert "plain no venv ['a']" in only_log(shared, task["id"])


def test_a_failed_preparation_fails_the_instance_and_a_retry_tries_again(
    shared: JobyardServer, tmp_path: Path
) -> None:
    requirements = f"jobyard-no-such-package-{unique()[:12]}==1.0\n"
    digest = upload(shared, python_package(tmp_path, requirements))["digest"]
    shared.create_template(package_spec("broken", digest, "python", "python main.py", retries=1))
    task = run_to_end(shared, "broken")
    assert task["status"] == "failed"
    instances = shared.instances(task["id"])
    assert [i["reason"] for i in instances] == ["PrepareFailed", "PrepareFailed"]
    failures = package_events(shared, digest, "PrepareFailed")
    assert len(failures) == 2  # the retry prepared again
    assert all(e["severity"] == "error" for e in failures)
    assert "failed with exit code" in failures[0]["message"]
    assert "last lines of the log" in failures[0]["message"]
    prepare_log = shared.api("GET", f"/namespaces/default/packages/{digest}/log", expect=200)
    assert len(prepare_headers(prepare_log)) == 2
    assert "jobyard-no-such-package" in prepare_log


# -- java -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """app.jar with Main-Class Hello, compiled here with the JDK."""
    if shutil.which("javac") is None or shutil.which("jar") is None:
        pytest.skip("the JDK (javac, jar) is not installed")
    work = tmp_path_factory.mktemp("java")
    (work / "Hello.java").write_text(
        "public class Hello {\n"
        "  public static void main(String[] args) {\n"
        '    System.out.println("hello " + System.getProperty("greeting") + " "'
        ' + String.join(",", args));\n'
        "  }\n"
        "}\n"
    )
    subprocess.run(["javac", "-d", str(work / "classes"), str(work / "Hello.java")], check=True)
    built = work / "app.jar"
    command = ["jar", "--create", "--file", str(built), "--main-class", "Hello"]
    subprocess.run([*command, "-C", str(work / "classes"), "."], check=True)
    return built


def test_java_package_runs_with_and_without_a_command(shared: JobyardServer, jar: Path) -> None:
    uploaded = upload(shared, jar)
    assert uploaded["kind"] == "jar"
    digest = uploaded["digest"]
    env = [{"name": "JAVA_OPTS", "value": "-Dgreeting=from-opts  -Xmx64m"}]
    shared.create_template(package_spec("java-plain", digest, "java", args=["one", "two"], env=env))
    plain = run_to_end(shared, "java-plain", timeout=120)
    assert plain["status"] == "succeeded", plain
    assert "hello from-opts one,two" in only_log(shared, plain["id"])

    command = "java -Dgreeting='from command' -jar app.jar"
    shared.create_template(package_spec("java-command", digest, "java", command, args=["x"]))
    given = run_to_end(shared, "java-command", timeout=120)
    assert given["status"] == "succeeded", given
    assert "hello from command x" in only_log(shared, given["id"])


# -- node -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """package.json + package-lock.json (made by npm) pinning is-number 7.0.0, and index.js."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    work = tmp_path_factory.mktemp("node")
    package_json = (
        '{"name": "jobyard-node-test", "version": "1.0.0", "private": true,'
        ' "dependencies": {"is-number": "7.0.0"}}\n'
    )
    (work / "package.json").write_text(package_json)
    lock = subprocess.run(
        ["npm", "install", "--package-lock-only", "--no-audit", "--no-fund"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if lock.returncode != 0:
        pytest.skip(f"npm could not resolve is-number, registry unreachable? {lock.stderr[-300:]}")
    index = (
        "const isNumber = require('is-number');\n"
        "console.log('is-number', isNumber(5), isNumber('x'), process.argv.slice(2).join(' '));\n"
    )
    files = {
        "package.json": package_json,
        "package-lock.json": (work / "package-lock.json").read_text(),
        "index.js": index,
    }
    return tar_gz_of(work / "app.tgz", files)


def test_node_package_installs_its_modules_then_runs(
    shared: JobyardServer, node_package: Path
) -> None:
    digest = upload(shared, node_package)["digest"]
    shared.create_template(package_spec("node", digest, "node", "node index.js", args=["go"]))
    task = run_to_end(shared, "node")
    assert task["status"] == "succeeded", task
    assert "is-number true false go" in only_log(shared, task["id"])
    prepare_log = shared.api("GET", f"/namespaces/default/packages/{digest}/log", expect=200)
    assert "npm ci --omit=dev" in prepare_log
    hex_digest = digest.removeprefix("sha256:")
    prepared = shared.data_dir / "packages" / "prepared" / hex_digest / "node"
    assert (prepared / "node_modules" / "is-number" / "package.json").is_file()
    assert "PackagePrepared" in reasons(shared, task["id"])


# -- binary ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def static_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    work = tmp_path_factory.mktemp("c")
    (work / "hello.c").write_text(
        "#include <stdio.h>\n"
        "int main(int argc, char **argv) {\n"
        '  printf("hello from C");\n'
        '  for (int i = 1; i < argc; i++) printf(" %s", argv[i]);\n'
        '  printf("\\n");\n'
        "  return 0;\n"
        "}\n"
    )
    built = work / "hello"
    result = subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(built), str(work / "hello.c")],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"gcc -static failed (is static libc installed?): {result.stderr[-300:]}")
    return built


def test_static_binary_runs_directly(shared: JobyardServer, static_binary: Path) -> None:
    uploaded = upload(shared, static_binary)
    assert uploaded["kind"] == "executable"
    shared.create_template(package_spec("c", uploaded["digest"], "binary", args=["a", "b c"]))
    task = run_to_end(shared, "c", timeout=60)
    assert task["status"] == "succeeded", task
    assert "hello from C a b c" in only_log(shared, task["id"])


def test_binary_archive_runs_the_command_it_names(shared: JobyardServer, tmp_path: Path) -> None:
    files = {"bin/tool": f'#!/bin/sh\necho tool "$@" in $PWD\n# {unique()}\n'}
    path = tar_gz_of(tmp_path / "tool.tar.gz", files, executable=("bin/tool",))
    digest = upload(shared, path)["digest"]
    shared.create_template(package_spec("tool", digest, "binary", "./bin/tool 'one arg'"))
    task = run_to_end(shared, "tool", timeout=60)
    assert task["status"] == "succeeded", task
    log = only_log(shared, task["id"])
    assert "tool one arg in " in log and log.rstrip().endswith("/work")


# -- missing runtimes and roles (a server of its own) -----------------------------------------


@pytest.fixture(scope="module")
def restricted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobyardServer]:
    """A server whose runtime PATH holds node but no npm, java or python3."""
    node = shutil.which("node")
    runtimes = tmp_path_factory.mktemp("runtimes")
    if node is not None:
        (runtimes / "node").symlink_to(node)
    data_dir = tmp_path_factory.mktemp("restricted")
    server = start_server(data_dir, extra_args=["--runtime-path", str(runtimes)])
    try:
        yield server
    finally:
        stop_server(server)


def test_a_missing_runtime_fails_the_task_at_once(
    restricted: JobyardServer, tmp_path: Path
) -> None:
    jar = make_zip(tmp_path / "app.jar", [("META-INF/MANIFEST.MF", b"Main-Class: X\n", 0)])
    java = upload(restricted, jar)["digest"]
    restricted.create_template(package_spec("java", java, "java", retries=3))
    script = zip_of(tmp_path / "py.zip", {"main.py": "print(1)\n"})
    python = upload(restricted, script)["digest"]
    restricted.create_template(package_spec("py", python, "python", "python3 main.py"))
    for name, program in (("java", "java"), ("py", "python3")):
        task = run_to_end(restricted, name, timeout=30)
        assert (task["status"], task["reason"]) == ("failed", "RuntimeMissing"), task
        instances = restricted.instances(task["id"])
        assert len(instances) == 1  # no retries: another attempt cannot install it
        assert instances[0]["reason"] == "RuntimeMissing"
        assert f"{program} is not installed on this host" in instances[0]["message"]
        assert "RuntimeMissing" in reasons(restricted, task["id"])


def test_a_node_package_without_npm_fails_with_runtime_missing(
    restricted: JobyardServer, tmp_path: Path
) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    files = {"package.json": '{"name": "x", "version": "1.0.0"}', "index.js": "console.log(1)\n"}
    digest = upload(restricted, tar_gz_of(tmp_path / "n.tar.gz", files))["digest"]
    restricted.create_template(package_spec("node", digest, "node", "node index.js"))
    task = run_to_end(restricted, "node", timeout=60)
    assert (task["status"], task["reason"]) == ("failed", "RuntimeMissing"), task
    assert "npm is not installed on this host" in restricted.instances(task["id"])[0]["message"]


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[JobyardServer]:
    """A server of its own: its tokens would lock the other tests out."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = start_server(data_dir)
    try:
        yield server
    finally:
        stop_server(server)


def test_operators_upload_and_delete_viewers_only_read(
    guarded: JobyardServer, tmp_path: Path
) -> None:
    restricted = guarded

    def token(name: str, role: str, namespace: str | None = None, auth: str | None = None) -> str:
        headers = {"Authorization": f"Bearer {auth}"} if auth else {}
        body = {"name": name, "role": role, "namespace": namespace}
        created = restricted.api("POST", "/tokens", expect=201, json=body, headers=headers)
        return str(created["token"])

    admin = token("admin", "admin")
    viewer = token("viewer", "viewer", auth=admin)
    operator = token("operator", "operator", auth=admin)
    restricted.api("POST", "/namespaces", expect=201, json={"name": "team"}, headers=_bearer(admin))
    outsider = token("outsider", "operator", namespace="team", auth=admin)
    path = zip_of(tmp_path / "roles.zip", {"a.txt": unique()})
    url = "/api/v1/namespaces/default/packages"

    def post(auth: str) -> httpx.Response:
        with path.open("rb") as file:
            files = {"file": (path.name, file)}
            return restricted.client.post(url, files=files, headers=_bearer(auth))

    assert restricted.client.get(url).status_code == 401
    refused = post(viewer)
    assert refused.status_code == 403 and "this needs operator" in refused.json()["message"]
    assert post(outsider).status_code == 404  # another namespace does not exist for it
    created = post(operator)
    assert created.status_code == 201
    digest = created.json()["digest"]
    assert restricted.client.get(url, headers=_bearer(viewer)).status_code == 200
    assert restricted.client.delete(f"{url}/{digest}", headers=_bearer(viewer)).status_code == 403
    assert restricted.client.delete(f"{url}/{digest}", headers=_bearer(operator)).status_code == 204


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the CLI --------------------------------------------------------------------------------


def cli(server: JobyardServer, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBYARD_")}
    env.update({"XDG_CONFIG_HOME": str(home / "config"), "JOBYARD_URL": server.url})
    return subprocess.run(
        [str(JOBYARD), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def one_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_cli_push_list_apply_and_delete(shared: JobyardServer, tmp_path: Path) -> None:
    app = tmp_path / "project" / "dist"
    app.mkdir(parents=True)
    main = f"print('applied from a local file {unique()}')\n"
    package = zip_of(app / "cli-app.zip", {"main.py": main})

    pushed = cli(shared, tmp_path, "package", "push", str(package))
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == sha256_of(package)
    assert "package cli-app.zip (zip" in pushed.stderr
    listing = cli(shared, tmp_path, "package", "list")
    assert "cli-app.zip" in listing.stdout and sha256_of(package) in listing.stdout

    spec = {
        "name": "cli-app",
        "deployment": {
            "type": "package",
            "package": "./dist/cli-app.zip",
            "stack": "python",
            "command": "python3 main.py",
        },
    }
    spec_file = tmp_path / "project" / "template.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    applied = cli(shared, tmp_path, "apply", "-f", str(spec_file))
    assert applied.returncode == 0, applied.stderr
    assert f"package {package} uploaded as {sha256_of(package)}" in applied.stdout
    assert "template cli-app created (version 1)" in applied.stdout
    again = cli(shared, tmp_path, "apply", "-f", str(spec_file))
    assert "template cli-app unchanged" in again.stdout
    template = shared.api("GET", "/namespaces/default/templates/cli-app", expect=200)
    assert template["spec"]["deployment"]["package"] == sha256_of(package)
    task = run_to_end(shared, "cli-app", timeout=60)
    assert "applied from a local file" in only_log(shared, task["id"])

    in_use = one_error(cli(shared, tmp_path, "package", "delete", sha256_of(package)))
    assert "still used by template 'cli-app' (version 1)" in in_use


def test_cli_errors_are_one_line(shared: JobyardServer, tmp_path: Path) -> None:
    missing = one_error(cli(shared, tmp_path, "package", "push", str(tmp_path / "nope.zip")), 2)
    assert "does not exist" in missing
    notes = tmp_path / "notes.txt"
    notes.write_text("text")
    assert "not a kind of package" in one_error(
        cli(shared, tmp_path, "package", "push", str(notes))
    )
    big = tmp_path / "big.zip"
    big.write_bytes(b"PK\x03\x04" + os.urandom(9 * MIB))
    too_big = one_error(cli(shared, tmp_path, "package", "push", str(big)))
    assert "larger than 8 MiB" in too_big or "package size limit" in too_big
    spec_file = tmp_path / "t.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "deployment": {"type": "package", "package": "./gone.zip", "stack": "binary"},
            }
        )
    )
    gone = one_error(cli(shared, tmp_path, "apply", "-f", str(spec_file)), 2)
    assert "deployment.package './gone.zip' is neither a digest" in gone
    shared.api("GET", "/namespaces/default/templates/x", expect=404)

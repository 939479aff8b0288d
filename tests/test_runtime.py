"""Runtimes: the host process runtime, and the Docker runtime on the real engine and stack image.

The Docker tests need a running engine with the stack image (`waka stack build`, which
scripts/test-deps runs). Without them they are skipped, except under CI (env CI set), where
they fail: CI must never pass by skipping.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from waka.adapters.runtime import (
    DockerRuntime,
    Mount,
    ProcessRuntime,
    RunTimedOut,
    RuntimeUnavailable,
    default_runtime,
    docker_available,
    docker_client,
)
from waka.adapters.stack import STACK_IMAGE


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


class Collect:
    """An `output` callback that keeps every chunk and when it arrived."""

    def __init__(self) -> None:
        self.chunks: list[tuple[float, bytes]] = []

    def __call__(self, chunk: bytes) -> None:
        self.chunks.append((time.monotonic(), chunk))

    @property
    def text(self) -> str:
        return b"".join(chunk for _, chunk in self.chunks).decode()

    def arrival(self, needle: str) -> float:
        seen = b""
        for at, chunk in self.chunks:
            seen += chunk
            if needle.encode() in seen:
                return at
        raise AssertionError(f"{needle!r} never arrived in {self.text!r}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent is gone or has not reaped it yet).
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(pid: int, seconds: float = 3.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


# --- ProcessRuntime ---------------------------------------------------------------------------


def run_process(command: list[str], **options) -> tuple[int, Collect]:
    collect = Collect()
    defaults = {"mounts": (), "env": {}, "workdir": "/", "memory_mb": 512, "output": collect}
    status = ProcessRuntime().run(command, **{**defaults, **options})
    return status, collect


def test_process_runtime_rewrites_container_paths_to_mounts(tmp_path: Path) -> None:
    app, cache = tmp_path / "app", tmp_path / "cache"
    (app / "bin").mkdir(parents=True)
    cache.mkdir()
    script = app / "bin/show"
    script.write_text(
        '#!/bin/sh\nfor a in "$@"; do echo "arg=$a"; done\necho "cwd=$(pwd)"\n'
        'echo "PATH=$PATH"\necho "BUILD_DIR=$BUILD_DIR"\necho "URL=$URL"\n'
    )
    script.chmod(0o755)

    status, out = run_process(
        ["/app/bin/show", "/app/cache/x", "/app", "/application", "/other", "relative"],
        # /app/cache is a mount of its own inside /app: the longer mount path wins.
        mounts=[Mount(app, "/app"), Mount(cache, "/app/cache/")],
        env={"PATH": "/app/bin:/usr/bin:/bin", "BUILD_DIR": "/app", "URL": "http://h:80/app"},
        workdir="/app/bin",
    )

    assert status == 0, out.text
    assert out.text.splitlines() == [
        f"arg={cache}/x",
        f"arg={app}",
        "arg=/application",
        "arg=/other",
        "arg=relative",
        f"cwd={app}/bin",
        f"PATH={app}/bin:/usr/bin:/bin",
        f"BUILD_DIR={app}",
        "URL=http://h:80/app",
    ]


def test_process_runtime_exit_status() -> None:
    assert run_process(["sh", "-c", "exit 3"])[0] == 3
    assert run_process(["true"])[0] == 0
    assert run_process(["sh", "-c", "kill -9 $$"])[0] == 128 + 9  # as Docker reports it


def test_process_runtime_merges_and_streams_output_in_order() -> None:
    started = time.monotonic()
    status, out = run_process(
        ["sh", "-c", "echo one; echo two >&2; echo three; sleep 1; echo four >&2"]
    )

    assert status == 0
    assert out.text == "one\ntwo\nthree\nfour\n"
    # Streamed as written, not handed over at the end.
    assert out.arrival("three") - started < 0.8
    assert out.arrival("four") - out.arrival("three") > 0.7


def test_process_runtime_environment_is_only_what_is_given(monkeypatch) -> None:
    monkeypatch.setenv("WAKA_TEST_LEAK", "from the host")
    status, out = run_process(["env"], env={"GIVEN": "yes"})

    variables = dict(line.split("=", 1) for line in out.text.splitlines())
    assert status == 0
    assert variables["GIVEN"] == "yes"
    assert "WAKA_TEST_LEAK" not in variables
    assert set(variables) == {"GIVEN", "PATH", "HOME"}  # host PATH and HOME as defaults
    assert variables["PATH"] == os.environ["PATH"]

    _, out = run_process(["env"], env={"PATH": "/bin", "HOME": "/nowhere"})
    assert {"PATH=/bin", "HOME=/nowhere"} <= set(out.text.splitlines())


def test_process_runtime_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(RunTimedOut):
        run_process(["sh", "-c", f"echo started; sleep 60 & echo $! > {pidfile}; wait"], timeout=1)
    out_time = time.monotonic() - started
    assert 0.9 < out_time < 5
    assert wait_dead(int(pidfile.read_text()))


def test_process_runtime_timeout_keeps_the_output_so_far() -> None:
    out = Collect()
    with pytest.raises(RunTimedOut, match="1 seconds"):
        ProcessRuntime().run(
            ["sh", "-c", "echo before; sleep 30"],
            mounts=(),
            env={},
            workdir="/",
            memory_mb=256,
            output=out,
            timeout=1,
        )
    assert out.text == "before\n"


def test_process_runtime_ends_what_the_command_left_running(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    started = time.monotonic()
    status, out = run_process(["sh", "-c", f"(sleep 60; echo late) & echo $! > {pidfile}"])
    assert status == 0
    assert time.monotonic() - started < 5
    assert wait_dead(int(pidfile.read_text()))
    assert "late" not in out.text


def test_process_runtime_memory_limit() -> None:
    python = shutil.which("python3")
    grab = [python, "-c", "b = bytearray(400 * 2**20); print('allocated')"]

    status, out = run_process(grab, memory_mb=64)
    assert status != 0 and "MemoryError" in out.text

    status, out = run_process(grab, memory_mb=512)
    assert status == 0 and "allocated" in out.text


def test_process_runtime_memory_limit_leaves_node_webassembly_working() -> None:
    # Node's fetch runs on WebAssembly, which reserves ~10 GiB of address space: an address
    # space limit (RLIMIT_AS) would break it; the data limit must not.
    if shutil.which("node") is None:
        if in_ci():
            pytest.fail("node is not installed (scripts/test-deps installs it)")
        pytest.skip("node is not installed")
    status, out = run_process(
        ["node", "-e", "new WebAssembly.Memory({initial: 1}); console.log('wasm ok')"],
        memory_mb=256,
    )
    assert (status, out.text) == (0, "wasm ok\n")


# --- DockerRuntime ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    engine = docker_client()
    reason = None
    if engine is None:
        reason = "no Docker engine answers"
    else:
        import docker.errors

        try:
            engine.images.get(STACK_IMAGE)
        except docker.errors.ImageNotFound:
            reason = f"no {STACK_IMAGE} image (run `waka stack build`)"
    if reason:
        if in_ci():
            pytest.fail(f"{reason}: CI needs Docker and the stack image (scripts/test-deps)")
        pytest.skip(reason)
    return engine


@pytest.fixture
def docker_run(client):
    """Run in the stack image with a test label, and check no container is left behind."""
    label = {"waka.test": uuid.uuid4().hex}

    def run(command: list[str], **options) -> tuple[int, Collect]:
        collect = Collect()
        defaults = {"mounts": (), "env": {}, "workdir": "/", "memory_mb": 256, "output": collect}
        runtime = DockerRuntime(client, STACK_IMAGE)
        status = runtime.run(command, **{**defaults, **options}, labels=label)
        return status, collect

    yield run
    left = client.containers.list(all=True, filters={"label": f"waka.test={label['waka.test']}"})
    assert left == [], "containers were left behind"


def test_docker_runtime_mounts_read_write_and_read_only(tmp_path: Path, docker_run) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "in.txt").write_text("from the host\n")

    status, out = docker_run(
        [
            "sh",
            "-c",
            "cat /ro/in.txt; pwd; echo written > out.txt; "
            "if touch /ro/nope 2>/dev/null; then echo ro-writable; else echo ro-refused; fi",
        ],
        mounts=[Mount(rw, "/rw"), Mount(ro, "/ro", read_only=True)],
        workdir="/rw",
    )

    assert status == 0, out.text
    assert out.text == "from the host\n/rw\nro-refused\n"
    assert (rw / "out.txt").read_text() == "written\n"
    assert not (ro / "nope").exists()


def test_docker_runtime_exit_status_env_and_path(docker_run) -> None:
    status, out = docker_run(["sh", "-c", 'echo "$PATH $GIVEN"; exit 7'], env={"GIVEN": "yes"})
    assert status == 7
    assert out.text == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin yes\n"

    assert docker_run(["no-such-command"])[0] == 127


def test_docker_runtime_mounts_one_host_directory_twice(tmp_path: Path, docker_run) -> None:
    (tmp_path / "file").write_text("same\n")
    status, out = docker_run(
        ["sh", "-c", "cat /one/file /two/file"],
        mounts=[Mount(tmp_path, "/one"), Mount(tmp_path, "/two", read_only=True)],
    )
    assert (status, out.text) == (0, "same\nsame\n")


def test_docker_runtime_streams_output_in_order(docker_run) -> None:
    started = time.monotonic()
    status, out = docker_run(["sh", "-c", "echo one; echo two >&2; sleep 2; echo three >&2"])

    assert status == 0
    assert out.text == "one\ntwo\nthree\n"
    assert out.arrival("three") - out.arrival("two") > 1.5
    assert out.arrival("two") - started < time.monotonic() - started - 1.5


def test_docker_runtime_memory_limit_is_the_containers(docker_run) -> None:
    status, out = docker_run(
        [
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
            " || cat /sys/fs/cgroup/memory.max",
        ],
        memory_mb=300,
    )
    assert status == 0
    assert out.text.strip() == str(300 * 2**20)


def test_docker_runtime_network_can_be_switched_off(docker_run) -> None:
    _, out = docker_run(["ls", "/sys/class/net"], network=False)
    assert out.text.split() == ["lo"]
    _, out = docker_run(["ls", "/sys/class/net"])
    assert "eth0" in out.text.split()


def test_docker_runtime_timeout_kills_and_removes(docker_run) -> None:
    started = time.monotonic()
    with pytest.raises(RunTimedOut):
        docker_run(["sh", "-c", "echo started; sleep 60"], timeout=2)
    assert time.monotonic() - started < 15


def test_docker_runtime_missing_image_is_a_clear_error(client) -> None:
    runtime = DockerRuntime(client, "waka/no-such-image:test")
    with pytest.raises(RuntimeUnavailable, match="waka stack build"):
        runtime.run(["true"], mounts=(), env={}, workdir="/", memory_mb=64, output=print)


def test_default_runtime_prefers_docker_with_the_image(client, caplog) -> None:
    assert docker_available()
    assert default_runtime(STACK_IMAGE).name == "docker"
    with caplog.at_level(logging.WARNING, logger="waka.runtime"):
        fallback = default_runtime("waka/no-such-image:test")
    assert fallback.name == "process"
    assert "waka/no-such-image:test" in caplog.text

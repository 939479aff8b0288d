"""Dynos as plain processes on this host, for machines without a container engine.

The same interface as DockerDynos, so the dyno manager behaves the same; only isolation is
missing. Each dyno gets its own copy of the slug (its /app, thrown away when it stops) and its
own port on 127.0.0.1, since processes share the host's network. Dynos are children of
`waka up`: they stop with it and are not adopted after a restart (the manager starts new ones).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from waka.adapters.archives import safe_extract
from waka.adapters.dynos import DynoSpec, ObservedDyno
from waka.adapters.slugs import APP_DIR

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class _Process:
    spec: DynoSpec
    popen: subprocess.Popen[bytes]
    app_dir: Path
    port: int
    created_at: str


class ProcessDynos:
    kind = "processes on this host, without isolation"

    def __init__(self, work_root: Path) -> None:
        self.work_root = work_root
        self._processes: dict[str, _Process] = {}
        self._lock = threading.Lock()

    def start(self, spec: DynoSpec) -> str:
        dyno_id = uuid.uuid4().hex
        self.work_root.mkdir(parents=True, exist_ok=True)
        app_dir = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=self.work_root))
        safe_extract(spec.slug_path, app_dir, strip_prefix=APP_DIR, allow_absolute_symlinks=True)
        port = _free_port()
        env = {
            "PATH": PATH,
            "LANG": "C.UTF-8",
            **spec.env,
            "PORT": str(port),
            "DYNO": spec.name,
            "PS": spec.name,
            "HOME": str(app_dir),
        }
        script = 'for f in "$HOME"/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; ' + spec.command
        popen = subprocess.Popen(
            ["bash", "-c", script],
            cwd=app_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGTERM reaches all it started
        )
        with self._lock:
            self._processes[dyno_id] = _Process(
                spec, popen, app_dir, port, datetime.now(UTC).isoformat()
            )
        return dyno_id

    def list(self) -> list[ObservedDyno]:
        with self._lock:
            processes = list(self._processes.items())
        found = []
        for dyno_id, process in processes:
            code = process.popen.poll()
            spec = process.spec
            found.append(
                ObservedDyno(
                    container_id=dyno_id,
                    app_id=spec.app_id,
                    name=spec.name,
                    process_type=spec.process_type,
                    command=spec.command,
                    release=spec.release,
                    generation=spec.generation,
                    size=spec.size,
                    running=code is None,
                    exit_code=None if code is None else (128 - code if code < 0 else code),
                    address=("127.0.0.1", process.port) if code is None else None,
                    created_at=process.created_at,
                )
            )
        return found

    def stop(self, dyno_id: str, timeout: int = 10) -> int | None:
        """SIGTERM to the dyno's process group, SIGKILL after `timeout` s; then forget it."""
        with self._lock:
            process = self._processes.get(dyno_id)
        if process is None:
            return None
        _signal_group(process.popen, signal.SIGTERM)
        try:
            code = process.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process.popen, signal.SIGKILL)
            code = process.popen.wait()
        self.remove(dyno_id)
        return 128 - code if code < 0 else code

    def remove(self, dyno_id: str) -> None:
        with self._lock:
            process = self._processes.pop(dyno_id, None)
        if process is None:
            return
        if process.popen.poll() is None:
            _signal_group(process.popen, signal.SIGKILL)
            process.popen.wait()
        shutil.rmtree(process.app_dir, ignore_errors=True)

    def follow_output(
        self, dyno_id: str, on_line: Callable[[str], None], *, from_now: bool = False
    ) -> None:
        with self._lock:
            process = self._processes.get(dyno_id)
        if process is None or process.popen.stdout is None:
            return
        stdout = process.popen.stdout

        def pump() -> None:
            for raw in stdout:
                on_line(raw.decode(errors="replace").rstrip("\r\n"))

        threading.Thread(target=pump, name=f"dyno-log-{dyno_id[:8]}", daemon=True).start()

    def shutdown(self) -> None:
        """When waka stops: its dynos are its children and stop with it."""
        with self._lock:
            ids = list(self._processes)
        for dyno_id in ids:
            self.stop(dyno_id, timeout=5)


def _signal_group(popen: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(popen.pid, sig)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

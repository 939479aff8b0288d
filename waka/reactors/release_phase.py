"""The release phase: a slug's `release:` process, run once before its release goes live.

A release with a release phase is pending (in the ledger: `ReleaseRequested`) while it runs.
Its output goes to the release's own output log, which `output_stream_url` serves while the
phase runs and replays afterwards (`heroku releases:output`); a build's release phase also
writes it into the build output, which the pusher sees.

Two ways in: a build runs its slug's release phase itself (`Builder`), and `run_pending`
runs those of releases made from an existing slug (`POST /apps/:app/releases`, which
`heroku releases:retry` calls). `run_pending` is level-triggered like the builder: its queue
is the releases read model, so a phase interrupted by a crash runs again after a restart.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any
from uuid import UUID

from waka.adapters.build_logs import BuildLog, BuildLogs
from waka.adapters.leases import Leases, LocalLeases, leased, work_dir_prefix
from waka.adapters.runtime import LabelledRuntime, Mount, Runtime, RunTimedOut
from waka.adapters.slugs import SlugStore
from waka.domain.actors import Actor
from waka.features import metadata_env
from waka.projections.config_vars import config_of
from waka.projections.releases import pending_slug_releases
from waka.projections.store import Row

log = logging.getLogger("waka.release_phase")

# Dynos and the release phase source the slug's .profile.d scripts first, as on Heroku.
# $HOME (= /app), not a literal path: the host runtime rewrites env values, not shell text.
PROFILE = 'for f in "$HOME"/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; '


class ReleasePhase:
    def __init__(
        self,
        runtime: Runtime,
        slugs: SlugStore,
        outputs: BuildLogs,
        *,
        work_root: Path,
        memory_mb: int = 2048,
        timeout: float = 600.0,
    ) -> None:
        self.runtime = runtime
        self.slugs = slugs
        self.outputs = outputs  # one log per release, named by its output id
        self.work_root = work_root
        self.memory_mb = memory_mb
        self.timeout = timeout

    def run(
        self,
        command: str,
        slug_id: str,
        config: dict[str, str],
        output_id: str,
        build_output: BuildLog | None = None,
        runtime: Runtime | None = None,
        lease: str | None = None,
    ) -> str | None:
        """Run `command` once with the slug at /app and the config vars; why it failed, or
        None. Output goes to the release's log and, indented, to the build's output; a build
        passes its own runtime (its containers carry the build's labels)."""
        if build_output is not None:
            build_output.step("Running release command...")
        release_output = self.outputs.open(output_id)
        self.work_root.mkdir(parents=True, exist_ok=True)
        prefix = work_dir_prefix(lease) if lease else f"release-{output_id[:8]}-"  # whose it is
        work = Path(tempfile.mkdtemp(prefix=prefix, dir=self.work_root))

        def write(data: bytes) -> None:
            release_output.write(data)
            if build_output is not None:
                build_output.write(_indent(data))

        try:
            self.slugs.extract(slug_id, work)
            env = {**config, "HOME": "/app", "DYNO": "release.1", "PS": "release.1"}
            status = (runtime or self.runtime).run(
                ["bash", "-c", f"{PROFILE}{command}"],
                mounts=[Mount(host=work, container="/app")],
                env=env,
                workdir="/app",
                memory_mb=self.memory_mb,
                output=write,
                timeout=self.timeout,
            )
        except RunTimedOut:
            failure: str | None = f"release command timed out after {self.timeout:.0f} s"
        else:
            failure = f"release command exited with status {status}" if status != 0 else None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if failure is not None:
            release_output.write(f"Release command failed: {failure}\n".encode())
        release_output.close()
        return failure

    def run_pending(
        self, platform: Any, leases: Leases | None = None, lease_label: str = "waka.lease"
    ) -> int:
        """Run the release phase of every pending slug release no other worker runs, oldest
        first, and record how it ended; return how many ran here."""
        done = 0
        leases = leases or LocalLeases()
        for row in pending_slug_releases(platform.store):
            lease = f"release:{row['app_id']}:{row['version']}"
            with leased(leases, lease) as ours:
                if not ours:
                    continue
                platform.projector.catch_up()
                if not any(
                    r["version"] == row["version"] and r["app_id"] == row["app_id"]
                    for r in pending_slug_releases(platform.store)
                ):
                    continue  # decided by the worker that held it a moment ago
                runtime = LabelledRuntime(self.runtime, {lease_label: lease})  # swept if we die
                self._run_release(platform, row, runtime, lease)
                done += 1
        return done

    def _run_release(self, platform: Any, row: Row, runtime: Runtime, lease: str) -> None:
        actor: Actor = {"id": row["user_id"], "email": row["user_email"]}
        try:
            failure = self.run(
                row["release_command"] or "",
                row["slug_id"],
                {  # config vars, and dyno metadata with runtime-dyno-metadata on
                    **config_of(platform.store, row["app_id"]),
                    **metadata_env(platform.store, row["app_id"], row["version"]),
                },
                row["output_id"],
                runtime=runtime,
                lease=lease,
            )
        except Exception:  # a missing slug, an engine gone away: the release fails
            log.exception("release phase of v%s of %s crashed", row["version"], row["app_id"])
            failure = "release command could not run (the operator's log has the details)"
        platform.ledger.finish_release(UUID(row["app_id"]), row["version"], failure, actor)
        platform.projector.catch_up()


def _indent(data: bytes) -> bytes:
    lines = data.decode(errors="replace").splitlines(keepends=True)
    return "".join(f"       {line}" for line in lines).encode()

"""App features with the real Heroku CLI, git and Docker dynos.

- `heroku labs:enable runtime-dyno-metadata`: `heroku run env`, a web dyno and the release
  phase see Heroku's dyno metadata with the right values; `heroku apps:diff` compares two apps.
- `heroku features:enable preboot`: a deploy under steady load. With preboot the old web dyno
  serves while the new one boots, no request fails or waits, and the old one stops after the
  new one is up; without it the old one stops first, and requests wait for the new one (held by
  the router, none fails).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .conftest import Api, GitRepo, WakaServer, app_repo, git_url, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]

BOOT_DELAY = 4.0  # seconds env-web sleeps before it binds $PORT


def through_router(server: WakaServer, app: str, timeout: float = 30) -> httpx.Response:
    return httpx.get(
        f"http://127.0.0.1:{server.router_port}/",
        headers={"Host": f"{app}.localhost"},
        timeout=timeout,
    )


def up_web(api: Api, app: str) -> list[dict]:
    return [d for d in api.get(f"/apps/{app}/dynos") if d["type"] == "web" and d["state"] == "up"]


def push(server: WakaServer, repo: GitRepo, app: str) -> str:
    pushed = repo.push(git_url(server, app))
    assert pushed.returncode == 0, pushed.output
    return pushed.output


def new_app(server: WakaServer, api: Api, tmp_path: Path, prefix: str) -> tuple[str, GitRepo]:
    app = api.create_app(prefix)
    return app, app_repo("env-web", tmp_path / app)


def heroku_vars(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(HEROKU_[A-Z_]+)=(.*?)\r?$", text, re.M))


# --- runtime-dyno-metadata --------------------------------------------------------------------


def test_runtime_dyno_metadata_in_run_web_and_release_phase_and_apps_diff(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app, repo = new_app(server, api, tmp_path, "meta")
    other, other_repo = new_app(server, api, tmp_path, "plain")

    labs = server.heroku("labs", "-a", app).stdout
    assert re.search(r"\[ \] runtime-dyno-metadata\s+Enable dyno metadata", labs), labs
    enabled = server.heroku("labs:enable", "runtime-dyno-metadata", "-a", app)
    assert f"Enabling runtime-dyno-metadata for {app}" in enabled.stderr + enabled.stdout
    assert re.search(r"\[\+\] runtime-dyno-metadata", server.heroku("labs", "-a", app).stdout)
    info = server.heroku("labs:info", "runtime-dyno-metadata", "-a", app).stdout
    assert "Enabled:" in info and "true" in info.split("Enabled:")[1]
    again = server.heroku("features:enable", "runtime-dyno-metadata", "-a", app, check=False)
    assert again.returncode != 0 and "already enabled" in again.stderr

    pushed = push(server, repo, app)
    push(server, other_repo, other)
    head = repo.head()
    app_id = api.get(f"/apps/{app}")["id"]
    (release,) = [r for r in api.get(f"/apps/{app}/releases") if r["current"]]
    expected = {
        "HEROKU_APP_ID": app_id,
        "HEROKU_APP_NAME": app,
        "HEROKU_RELEASE_VERSION": f"v{release['version']}",
        "HEROKU_RELEASE_CREATED_AT": release["created_at"],
        "HEROKU_SLUG_COMMIT": head,
        "HEROKU_SLUG_DESCRIPTION": f"Deploy {head[:8]}",
    }

    # The release phase ran with them (its release was still pending then: same version).
    phase = dict(re.findall(r"release-phase (HEROKU_[A-Z_]+)=(.*?)\s*$", pushed, re.M))
    assert {k: phase.get(k) for k in expected if k != "HEROKU_RELEASE_CREATED_AT"} == {
        k: v for k, v in expected.items() if k != "HEROKU_RELEASE_CREATED_AT"
    }
    uuid.UUID(phase["HEROKU_DYNO_ID"])

    # A one-off dyno (`heroku run`, attached over waka's rendezvous).
    ran = server.heroku("run", "-a", app, "--", "env")
    run_vars = heroku_vars(ran.stdout)
    assert {k: run_vars.get(k) for k in expected} == expected, ran.stdout
    uuid.UUID(run_vars["HEROKU_DYNO_ID"])

    # The web dyno, through the router; its dyno id is its own.
    wait_for(lambda: len(up_web(api, app)) == 1, timeout=120, what="web.1 up")
    web = through_router(server, app).json()
    assert {k: web["env"].get(k) for k in expected} == expected
    assert uuid.UUID(web["env"]["HEROKU_DYNO_ID"]) != uuid.UUID(run_vars["HEROKU_DYNO_ID"])

    # Without the feature, none of it.
    plain = heroku_vars(server.heroku("run", "-a", other, "--", "env").stdout)
    assert plain == {}

    # apps:diff compares slugs, config vars, stack, buildpacks, add-ons and features.
    server.heroku("config:set", "ONLY_HERE=1", "-a", app)
    diff = server.heroku("apps:diff", app, other).stdout
    assert re.search(r"enabled\s+feature \(runtime-dyno-metadata\)\s+disabled", diff), diff
    assert re.search(r"1\s+config \(ONLY_HERE\)", diff), diff
    # Two builds make two slugs (file times differ): the slugs' checksums, as the API has them.
    checksums = []
    for name in (app, other):
        (current,) = [r for r in api.get(f"/apps/{name}/releases") if r["current"]]
        checksums.append(api.get(f"/apps/{name}/slugs/{current['slug']['id']}")["checksum"])
    slug_row = next(line for line in diff.splitlines() if "slug (checksum)" in line)
    assert all(c[:40] in slug_row for c in checksums), (slug_row, checksums)
    same = server.heroku("apps:diff", app, app).stdout
    assert "feature (" not in same and "config (" not in same

    server.heroku("labs:disable", "runtime-dyno-metadata", "-a", app)
    switches = [(a.actor, a.action) for a in server.audit("--app", app) if "feature" in a.action]
    assert switches == [
        (server.email, "Enable feature runtime-dyno-metadata"),
        (server.email, "Disable feature runtime-dyno-metadata"),
    ]
    assert heroku_vars(server.heroku("run", "-a", app, "--", "env").stdout) == {}
    unknown = server.heroku("labs:enable", "no-such-feature", "-a", app, check=False)
    assert unknown.returncode != 0 and "Couldn't find that feature" in unknown.stderr


# --- preboot ------------------------------------------------------------------------------------


@dataclass
class Answer:
    started: float
    ended: float
    status: int  # 0: no response (connection error, timeout)
    version: str
    host: str


class SteadyLoad:
    """Requests through the router, one after another, by two threads, until stopped."""

    def __init__(self, server: WakaServer, app: str) -> None:
        self.server, self.app = server, app
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = through_router(self.server, self.app, timeout=45)
                body = response.json() if response.status_code == 200 else {}
                answer = Answer(started, time.monotonic(), response.status_code,
                                body.get("version", ""), body.get("host", ""))  # fmt: skip
            except (httpx.HTTPError, ValueError):
                answer = Answer(started, time.monotonic(), 0, "", "")
            self.answers.append(answer)
            time.sleep(0.05)


def _deploy_v2_under_load(
    server: WakaServer, api: Api, repo: GitRepo, app: str
) -> tuple[list[Answer], float]:
    """Push version v2 while the load runs; the answers, and when the push returned (the
    release is live by then)."""
    (repo.path / "VERSION").write_text("v2\n")
    repo.commit_all("v2")
    with SteadyLoad(server, app) as load:
        wait_for(lambda: len(load.answers) > 10, what="load running")
        push(server, repo, app)
        released = time.monotonic()
        wait_for(
            lambda: (
                any(a.version == "v2" for a in load.answers[-5:])
                and time.monotonic() > released + 8
            ),
            timeout=120,
            what="v2 serving",
        )
    return load.answers, released


def _web_log(server: WakaServer, app: str) -> list[str]:
    logs = server.heroku("logs", "-n", "300", "-a", app).stdout
    return [line.split(": ", 1)[1] for line in logs.splitlines() if "heroku[web.1]: " in line]


def _replacement(lines: list[str]) -> list[str]:
    """The dyno manager's words about web.1 during the last replacement."""
    last_start = max(i for i, line in enumerate(lines) if line.startswith("Starting process"))
    first_stop = max(i for i, line in enumerate(lines) if line.startswith("Stopping all"))
    start = min(last_start, first_stop)
    wanted = ("Starting process", "State changed from starting to up", "Stopping all",
              "Process exited")  # fmt: skip
    return [w for line in lines[start:] for w in wanted if line.startswith(w)]


def _deployed_app(server: WakaServer, api: Api, tmp_path: Path, prefix: str) -> tuple[str, GitRepo]:
    app, repo = new_app(server, api, tmp_path, prefix)
    server.heroku("config:set", f"BOOT_DELAY={BOOT_DELAY}", "-a", app)
    push(server, repo, app)
    wait_for(lambda: len(up_web(api, app)) == 1, timeout=120, what="web.1 up")
    wait_for(lambda: through_router(server, app).status_code == 200, what="v1 serving")
    return app, repo


def test_preboot_new_web_dyno_takes_traffic_before_the_old_one_stops(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app, repo = _deployed_app(server, api, tmp_path, "preboot")
    features = server.heroku("features", "-a", app).stdout
    assert re.search(r"\[ \] preboot\s+Provide seamless web dyno deploys", features), features
    server.heroku("features:enable", "preboot", "-a", app)
    assert re.search(r"\[\+\] preboot", server.heroku("features", "-a", app).stdout)
    info = server.heroku("features:info", "preboot", "-a", app).stdout
    assert "devcenter.heroku.com/articles/preboot" in info

    answers, released = _deploy_v2_under_load(server, api, repo, app)
    assert all(a.status == 200 for a in answers), [a for a in answers if a.status != 200]
    # The old dyno kept serving while the new one booted (BOOT_DELAY s): no request waited.
    assert max(a.ended - a.started for a in answers) < BOOT_DELAY / 2
    old_late = [a for a in answers if a.version == "v1" and a.started > released + BOOT_DELAY / 2]
    assert old_late, "the old dyno stopped serving before the new one was up"
    first_v2 = min(a.started for a in answers if a.version == "v2")
    assert first_v2 > released + BOOT_DELAY * 0.75  # v2 only once it had booted
    hosts = {a.host for a in answers}
    assert len(hosts) == 2  # two containers: the old and the new
    # In the log: the new web.1 up, only then the old one stopped.
    assert _replacement(_web_log(server, app)) == [
        "Starting process", "State changed from starting to up", "Stopping all", "Process exited",
    ]  # fmt: skip


def test_without_preboot_the_old_web_dyno_stops_first_and_requests_wait(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app, repo = _deployed_app(server, api, tmp_path, "noboot")
    answers, released = _deploy_v2_under_load(server, api, repo, app)
    # No request failed: those that came while no dyno ran were held until v2 was up.
    assert all(a.status == 200 for a in answers), [a for a in answers if a.status != 200]
    held = [a for a in answers if a.ended - a.started > BOOT_DELAY * 0.75]
    assert held and all(a.version == "v2" for a in held)
    # Nothing served v1 once the new dyno could have been up: the old one had stopped first.
    v1_after = [a for a in answers if a.version == "v1" and a.ended > released + BOOT_DELAY]
    assert not v1_after
    assert _replacement(_web_log(server, app)) == [
        "Stopping all", "Process exited", "Starting process", "State changed from starting to up",
    ]  # fmt: skip

"""Running apps: a pushed app serves through the router, scales, survives a dyno killed from
outside, and answers Heroku's H codes; a redeploy under load fails no request.

Real parts throughout: `waka up`, the git client, the Heroku CLI, Docker dynos of the stack
image, and HTTP through waka's router.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from .conftest import Api, WakaServer, app_repo, git_url, start_server, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


def through_router(server: WakaServer, app: str, path: str = "/") -> httpx.Response:
    return httpx.get(
        f"http://127.0.0.1:{server.router_port}{path}",
        headers={"Host": f"{app}.localhost"},
        timeout=30,
    )


def up_dynos(api: Api, app: str, process_type: str = "web") -> list[dict]:
    return [
        d for d in api.get(f"/apps/{app}/dynos") if d["type"] == process_type and d["state"] == "up"
    ]


def deploy(server: WakaServer, api: Api, tmp_path: Path, fixture: str = "python-web"):
    app = api.create_app("run")
    repo = app_repo(fixture, tmp_path / app)
    pushed = repo.push(git_url(server, app))
    assert pushed.returncode == 0, pushed.output
    wait_for(lambda: len(up_dynos(api, app)) == 1, what="web.1 up")
    return app, repo


def test_pushed_app_serves_through_the_router_and_scales(server, api, tmp_path):
    app, _repo = deploy(server, api, tmp_path)
    response = through_router(server, app)
    assert response.status_code == 200
    assert response.text.startswith("Hello from python-web") and "on web.1" in response.text

    scaled = server.heroku("ps:scale", "web=3", "-a", app)
    assert "now running web at 3:" in scaled.stderr
    wait_for(lambda: len(up_dynos(api, app)) == 3, what="three web dynos up")
    ps = server.heroku("ps", "-a", app).stdout
    assert ps.count(": up ") == 3, ps
    served_by = Counter(
        through_router(server, app).text.split(" on ")[-1].strip() for _ in range(45)
    )
    assert set(served_by) == {"web.1", "web.2", "web.3"}, served_by

    # A dyno killed from outside comes back.
    victim = next(d for d in api.get(f"/apps/{app}/dynos") if d["name"] == "web.2")
    container = subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            "label=waka.dyno=web.2",
            "--filter",
            f"label=waka.app={api.get(f'/apps/{app}')['id']}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(container) == 1
    subprocess.run(["docker", "kill", container[0]], check=True, capture_output=True)
    wait_for(
        lambda: any(
            d["name"] == "web.2" and d["state"] == "up" and d["id"] != victim["id"]
            for d in api.get(f"/apps/{app}/dynos")
        ),
        what="web.2 back up",
    )
    log = server.heroku("logs", "-n", "1500", "-a", app).stdout
    assert "heroku[web.2]: State changed from up to crashed" in log, log[-2000:]
    assert "heroku[web.2]: State changed from starting to up" in log
    assert "heroku[router]: at=info method=GET" in log and "dyno=web.3" in log

    server.heroku("ps:scale", "web=1", "-a", app)
    wait_for(
        lambda: [d["name"] for d in api.get(f"/apps/{app}/dynos")] == ["web.1"],
        what="scaled down to web.1",
    )


def test_router_error_codes(server, api, tmp_path):
    app, _repo = deploy(server, api, tmp_path)
    assert through_router(server, "no-such-app-here").status_code == 404

    server.heroku("maintenance:on", "-a", app)
    maintenance = wait_for(
        lambda: (r := through_router(server, app)).status_code == 503 and r,
        what="H80 maintenance page",
    )
    assert "maintenance" in maintenance.text.lower()
    server.heroku("maintenance:off", "-a", app)
    wait_for(lambda: through_router(server, app).status_code == 200, what="back from maintenance")

    server.heroku("ps:scale", "web=0", "-a", app)
    no_web = wait_for(
        lambda: (r := through_router(server, app)).status_code == 503 and r,
        what="H14 with no web dynos",
    )
    assert "application error" in no_web.text.lower()


def test_app_that_crashes_at_boot_gives_h10(server, api, tmp_path):
    app = api.create_app("crash")
    source = tmp_path / "crasher"
    source.mkdir()
    (source / "Procfile").write_text("web: echo 'booting and failing'; exit 1\n")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=source, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "add", "-A"],
        cwd=source,
        check=True,
    )
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "crash"],
        cwd=source,
        check=True,
    )
    pushed = subprocess.run(
        ["git", "push", git_url(server, app), "main"],
        cwd=source,
        capture_output=True,
        text=True,
        env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin"},
    )
    assert pushed.returncode == 0, pushed.stderr

    def h10() -> str | None:
        response = through_router(server, app)
        logs = server.heroku("logs", "-a", app).stdout
        return (
            response.status_code == 503
            and "heroku[router]: at=error code=H10" in logs
            and (logs if "application error" in response.text.lower() else None)
        )

    logs = wait_for(h10, timeout=60, what="H10 from the router")
    assert 'desc="App crashed"' in logs
    assert "app[web.1]: booting and failing" in logs
    assert "heroku[web.1]: Process exited with status 1" in logs


def test_redeploy_under_load_fails_no_request(server, api, tmp_path):
    app, repo = deploy(server, api, tmp_path)
    server.heroku("ps:scale", "web=2", "-a", app)
    wait_for(lambda: len(up_dynos(api, app)) == 2, what="two web dynos")
    failures: list[str] = []
    served = Counter()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                response = client.get(
                    f"http://127.0.0.1:{server.router_port}/", headers={"Host": f"{app}.localhost"}
                )
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:80]}")
                served[response.status_code] += 1

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        before = api.current_release(app)["version"]
        (repo.path / "app.py").write_text((repo.path / "app.py").read_text() + "\n# v2\n")
        repo.commit_all("redeploy")
        assert repo.push(git_url(server, app)).returncode == 0
        wait_for(
            lambda: (
                {d["release"]["version"] for d in up_dynos(api, app)} == {before + 1}
                and len(up_dynos(api, app)) == 2
            ),
            timeout=90,
            what="new release's dynos up",
        )
        time.sleep(1.5)  # old dynos get SIGTERM after the new ones are routed
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert served[200] > 20, served
    assert failures == [], failures[:5]


def test_custom_domain_routes_to_the_app(server, api, tmp_path):
    app, _repo = deploy(server, api, tmp_path)
    hostname = f"www.{app}.example.com"
    added = server.heroku("domains:add", hostname, "-a", app)
    assert "DNS Target" in added.stdout
    assert hostname in server.heroku("domains", "-a", app).stdout

    def via_domain() -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{server.router_port}/", headers={"Host": hostname}, timeout=30
        )

    served = wait_for(lambda: (r := via_domain()).status_code == 200 and r, what="domain routed")
    assert served.text.startswith("Hello from python-web")
    other = api.create_app("taken")
    refused = server.heroku("domains:add", hostname, "-a", other, check=False)
    assert refused.returncode != 0 and "already in use" in refused.stderr

    server.heroku("domains:remove", hostname, "-a", app)
    wait_for(lambda: via_domain().status_code == 404, what="domain no longer routed")
    assert "Add domain" in " ".join(line.action for line in server.audit("--app", app))


def test_eco_app_sleeps_and_wakes_on_a_request(heroku_cli, tmp_path_factory):
    sleepy = start_server(
        tmp_path_factory.mktemp("sleepy"), heroku_cli, env={"WAKA_SLEEP_AFTER": "3"}
    )
    api = Api(sleepy)
    try:
        app, _repo = deploy(sleepy, api, tmp_path_factory.mktemp("sleepy-app"))
        scaled = sleepy.heroku("ps:scale", "web=1:eco", "-a", app)
        assert "web at 1:Eco" in scaled.stderr
        wait_for(
            lambda: (
                [(d["size"], d["state"]) for d in api.get(f"/apps/{app}/dynos")] == [("Eco", "up")]
            ),
            what="an eco web dyno",
        )
        wait_for(lambda: api.get(f"/apps/{app}/dynos") == [], timeout=30, what="asleep")
        started = time.monotonic()
        woke = through_router(sleepy, app)  # held by the router while the app wakes
        assert woke.status_code == 200 and woke.text.startswith("Hello from python-web")
        assert time.monotonic() - started < 30
        assert len(up_dynos(api, app)) == 1
    finally:
        api.close()
        sleepy.stop_cleanly()


def test_logs_tail_shows_a_requests_router_line_within_a_second(server, api, tmp_path):
    app, _repo = deploy(server, api, tmp_path)
    tail = subprocess.Popen(
        [str(server.heroku_cli), "logs", "--tail", "-a", app],
        env=server.heroku_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[tuple[float, str]] = []

    def read() -> None:
        assert tail.stdout is not None
        for line in tail.stdout:
            seen.append((time.monotonic(), line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: any("app[api]" in line or "heroku[" in line for _, line in seen),
            timeout=30,
            what="the tail to start",
        )
        marker = f"/tail-check-{time.monotonic_ns()}"
        sent = time.monotonic()
        assert through_router(server, app, marker).status_code == 200
        arrived = wait_for(
            lambda: next(
                (at for at, line in seen if "heroku[router]: at=info" in line and marker in line),
                None,
            ),
            timeout=10,
            what="the router line in the tail",
        )
        assert arrived - sent < 1.0, f"router line took {arrived - sent:.2f} s"
    finally:
        tail.terminate()
        tail.wait(timeout=10)

    dyno_only = server.heroku("logs", "--dyno", "web.1", "-a", app).stdout
    assert "app[web.1]" in dyno_only and "heroku[router]" not in dyno_only
    assert "heroku[router]" not in server.heroku("logs", "--source", "app", "-a", app).stdout


def test_syslog_drain_receives_the_apps_lines(server, api, tmp_path):
    import socket as sockets

    app, _repo = deploy(server, api, tmp_path)
    listener = sockets.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = bytearray()

    def accept() -> None:
        connection, _ = listener.accept()
        with connection:
            while chunk := connection.recv(65536):
                received.extend(chunk)

    threading.Thread(target=accept, daemon=True).start()
    url = f"syslog://127.0.0.1:{port}"
    server.heroku("drains:add", url, "-a", app)
    assert url in server.heroku("drains", "-a", app).stdout
    marker = f"/drain-check-{time.monotonic_ns()}"

    def delivered() -> bool:
        through_router(server, app, marker)
        return marker.encode() in received

    wait_for(delivered, timeout=30, what="the router line at the syslog drain")
    frame = bytes(received).split(b"\n")[0]
    assert frame.split(b" ", 1)[0].isdigit(), frame  # octet-counted RFC 5424 framing
    server.heroku("drains:remove", url, "-a", app)
    assert url not in server.heroku("drains", "-a", app).stdout
    listener.close()


def test_config_change_restart_and_destroy_converge(server, api, tmp_path):
    app, _repo = deploy(server, api, tmp_path)
    app_id = api.get(f"/apps/{app}")["id"]
    first = {d["id"] for d in up_dynos(api, app)}

    set_output = server.heroku("config:set", "GREETING=hi", "-a", app)
    version = int(set_output.stderr.rsplit("v", 1)[-1].split()[0])
    wait_for(
        lambda: [d["release"]["version"] for d in up_dynos(api, app)] == [version],
        what="the dyno replaced on the config change's release",
    )
    second = {d["id"] for d in up_dynos(api, app)}
    assert second.isdisjoint(first)
    env = subprocess.run(
        [
            "docker",
            "exec",
            *subprocess.run(
                [
                    "docker",
                    "ps",
                    "-q",
                    "--filter",
                    f"label=waka.app={app_id}",
                    "--filter",
                    f"label=waka.release={version}",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[:1],
            "printenv",
            "GREETING",
        ],
        capture_output=True,
        text=True,
    )
    assert env.stdout.strip() == "hi", env

    server.heroku("ps:restart", "web", "-a", app)
    wait_for(
        lambda: (ids := {d["id"] for d in up_dynos(api, app)}) and ids.isdisjoint(second),
        what="web restarted",
    )
    assert "Restart web" in " ".join(line.action for line in server.audit("--app", app))

    server.heroku("apps:destroy", "-a", app, "--confirm", app)

    def containers() -> list[str]:
        return subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=waka.app={app_id}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()

    wait_for(lambda: containers() == [], timeout=30, what="every dyno of the destroyed app gone")
    assert through_router(server, app).status_code == 404

"""Dyno isolation and limits, probed from inside real dynos (`heroku run` and formation dynos).

Two apps of tests/fixtures/apps/isolation-probe (stdlib python3, a Procfile-only build) on one
`waka up` whose Heroku Postgres add-ons live on the test PostgreSQL server: a dyno of one app
cannot open a connection to the other's dyno, but reaches the host (a public port, its add-on
database); it runs unprivileged, without capabilities, new privileges, host mounts or Docker
socket; it can fork only so far, while the other app is served; one over its memory is killed,
logged as R15 and restarted; and the PostgreSQL superuser cannot log in from a dyno.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from waka.domain import rules

from .conftest import (
    Api,
    WakaServer,
    app_repo,
    git_url,
    running_server,
    wait_for,
)
from .test_addons import ADMIN_URL, _remove_leftovers

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


@pytest.fixture(scope="module")
def server(heroku_cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WakaServer]:
    tmp = tmp_path_factory.mktemp("waka-isolation")
    try:
        with running_server(tmp, heroku_cli, {"WAKA_ADDONS_POSTGRES_URL": ADMIN_URL}) as server:
            yield server
    finally:
        _remove_leftovers(tmp / "waka-home")


@pytest.fixture(scope="module")
def api(server: WakaServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


def push_probe(server: WakaServer, api: Api, tmp: Path, prefix: str) -> str:
    name = api.create_app(prefix)
    server.heroku("config:set", f"PROBE_NAME={name}", "-a", name)
    pushed = app_repo("isolation-probe", tmp / name).push(git_url(server, name))
    assert pushed.returncode == 0, pushed.output
    return name


@pytest.fixture(scope="module")
def apps(server: WakaServer, api: Api, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(prober, victim): two apps of the probe, each with its web dyno up behind the router."""
    tmp = tmp_path_factory.mktemp("repos")
    prober = push_probe(server, api, tmp, "prober")
    victim = push_probe(server, api, tmp, "victim")
    for app in (prober, victim):
        wait_for(lambda app=app: routed(server, app) == f"probe {app} on web.1", 90, f"{app} up")
    return prober, victim


def routed(server: WakaServer, app: str) -> str:
    try:
        response = httpx.get(
            f"http://127.0.0.1:{server.router_port}/",
            headers={"Host": f"{app}.localhost"},
            timeout=10,
        )
    except httpx.HTTPError:
        return ""
    return response.text.strip() if response.status_code == 200 else ""


def run(server: WakaServer, app: str, command: str) -> str:
    """`heroku run -x` in a one-off dyno of `app`: its output (the command must succeed)."""
    return server.heroku("run", "-x", "--no-tty", "-a", app, "--", command).stdout


def container_of(api: Api, app: str, dyno: str) -> dict | None:
    """`docker inspect` of the app's running dyno, or None when it has none running."""
    app_id = api.get(f"/apps/{app}")["id"]
    label = f"label=waka.dyno={dyno}"
    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=waka.app={app_id}", "--filter", label],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if len(ids) != 1:
        return None
    inspected = subprocess.run(
        ["docker", "inspect", ids[0]], capture_output=True, text=True, check=True
    )
    return json.loads(inspected.stdout)[0]


def dyno_address(api: Api, app: str, dyno: str) -> str:
    container = wait_for(lambda: container_of(api, app, dyno), 30, f"{dyno} of {app}")
    networks = container["NetworkSettings"]["Networks"]
    return networks["waka-dynos"]["IPAddress"]


def logs(server: WakaServer, app: str) -> list[str]:
    return server.heroku("logs", "-n", "1500", "-a", app).stdout.splitlines()


def key_values(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


# --- the network ------------------------------------------------------------------------------


def test_a_dyno_cannot_reach_another_app_s_dyno(
    server: WakaServer, api: Api, apps: tuple[str, str]
) -> None:
    prober, victim = apps
    address = dyno_address(api, victim, "web.1")
    # The address is right: the router (on the host) reaches the victim's dyno there.
    with socket.create_connection((address, 5000), timeout=5):
        pass
    assert run(server, prober, f"python3 probe.py connect {address} 5000").strip() == "timeout"
    # Nor its own app's web dyno: dynos talk to each other through the router only.
    own = dyno_address(api, prober, "web.1")
    assert run(server, prober, f"python3 probe.py connect {own} 5000").strip() == "timeout"
    assert routed(server, victim) == f"probe {victim} on web.1"


def test_a_dyno_reaches_the_host_s_public_ports(server: WakaServer, apps: tuple[str, str]) -> None:
    prober, _ = apps
    # A port on every address of the host, as the router's is with `waka up --host 0.0.0.0`.
    with socket.create_server(("0.0.0.0", 0)) as public:
        port = public.getsockname()[1]
        accepted: list[str] = []
        threading.Thread(target=lambda: accepted.append(public.accept()[1][0]), daemon=True).start()
        out = run(server, prober, f'python3 probe.py connect "$(python3 probe.py gateway)" {port}')
        assert out.strip() == "connected", out
        wait_for(lambda: accepted, 10, "the connection accepted")


# --- the user and its privileges ---------------------------------------------------------------


def expect_unprivileged(report: dict[str, str]) -> None:
    assert report["Uid"] == report["Gid"] == "1000", report
    assert report["CapEff"] == report["CapPrm"] == report["CapBnd"] == "0" * 16, report
    assert report["NoNewPrivs"] == "1", report
    assert report["binds"] == "", report  # nothing of the host but Docker's /etc/hosts & co
    assert report["docker_socket"] == "False", report
    assert report["writable"] == "/app,/tmp", report
    assert report["slug_readable"] == "True", report


def test_a_one_off_dyno_runs_unprivileged(server: WakaServer, apps: tuple[str, str]) -> None:
    prober, _ = apps
    expect_unprivileged(key_values(run(server, prober, "python3 probe.py report")))
    assert run(server, prober, "whoami; id -gn").split() == ["dyno", "dyno"]
    # setuid binaries give nothing (no new privileges) and raw sockets are refused (no NET_RAW).
    denied = run(server, prober, "su -c true root </dev/null 2>&1; echo status=$?")
    assert "status=0" not in denied, denied
    raw = run(
        server,
        prober,
        "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)' "
        "2>&1 | tail -n 1",
    )
    assert "PermissionError" in raw, raw


def test_a_formation_dyno_runs_unprivileged(server: WakaServer, apps: tuple[str, str]) -> None:
    prober, _ = apps
    server.heroku("ps:scale", "report=1", "-a", prober)
    try:
        lines = wait_for(
            lambda: (
                [line for line in logs(server, prober) if "app[report.1]" in line and "=" in line]
                if any("slug_readable=" in line for line in logs(server, prober))
                else None
            ),
            90,
            "the report dyno's report",
        )
        report = key_values("\n".join(line.split(": ", 1)[1] for line in lines))
        expect_unprivileged(report)
    finally:
        server.heroku("ps:scale", "report=0", "-a", prober)


# --- limits -------------------------------------------------------------------------------------


def test_a_fork_bomb_stops_at_the_size_s_process_limit(
    server: WakaServer, apps: tuple[str, str]
) -> None:
    prober, victim = apps
    limit = rules.SIZE_PROCESSES["Standard-1X"]
    cli = subprocess.Popen(
        [
            str(server.heroku_cli),
            "run",
            "-x",
            "--no-tty",
            "-a",
            prober,
            "--",
            "python3 probe.py forks 8",
        ],
        cwd=server.cli_home,
        env=server.heroku_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stdout is not None
        first = cli.stdout.readline()  # printed once the dyno is full: its children hold 8 s
        # While the prober's dyno is full of processes, the victim is served as ever.
        answers = [routed(server, victim) for _ in range(5)]
        out, err = cli.communicate(timeout=120)
        out = first + out
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, (out, err)
    forked = int(key_values(out)["forked"])
    # The dyno's own shell, python and docker-init count too; the rest were refused.
    assert limit - 10 <= forked < limit, out
    assert answers and all(a == f"probe {victim} on web.1" for a in answers), answers


def test_a_dyno_over_its_memory_is_killed_logged_as_r15_and_restarted(
    server: WakaServer, api: Api, apps: tuple[str, str]
) -> None:
    prober, _ = apps
    server.heroku("ps:scale", "hog=1:Standard-1X", "-a", prober)
    try:
        hog_dyno = wait_for(lambda: container_of(api, prober, "hog.1"), 60, "hog.1 running")
        limits = hog_dyno["HostConfig"]
        assert limits["Memory"] == rules.SIZE_MEMORY_MB["Standard-1X"] * 2**20
        assert limits["CpuShares"] == rules.SIZE_CPU_SHARES["Standard-1X"]
        assert limits["PidsLimit"] == rules.SIZE_PROCESSES["Standard-1X"]

        def killed_twice() -> list[str] | None:
            hog = [line.split(": ", 1)[1] for line in logs(server, prober) if "[hog.1]" in line]
            return hog if hog.count("Error R15 (Memory quota vastly exceeded)") >= 2 else None

        hog = wait_for(killed_twice, 120, "the hog killed twice")
        at = hog.index("Error R15 (Memory quota vastly exceeded)")
        assert hog[at : at + 4] == [
            "Error R15 (Memory quota vastly exceeded)",
            "Stopping process with SIGKILL",
            "Process exited with status 137",
            "State changed from up to crashed",
        ], hog
        # Restarted after the kill: it started again and took memory again.
        assert "Starting process with command `python3 probe.py hog`" in hog[at:], hog
        assert hog.count("hog: taking memory") >= 2, hog
    finally:
        server.heroku("ps:scale", "hog=0", "-a", prober)


# --- add-on servers ----------------------------------------------------------------------------


def test_add_on_postgres_only_with_the_add_on_s_own_credentials(
    server: WakaServer, apps: tuple[str, str]
) -> None:
    prober, _ = apps
    server.heroku("addons:create", "heroku-postgresql:essential-0", "-a", prober)
    login = "python3 probe.py pg"
    own = run(server, prober, f'{login} "$DATABASE_URL"')
    assert own.strip() == "logged in", own
    # The superuser, with the test setup's password, from the same dyno to the same server.
    superuser = run(
        server,
        prober,
        f"{login} \"$(echo $DATABASE_URL | sed -E 's#//[^@]*@#//postgres:postgres@#')\"",
    )
    assert "pg_hba.conf rejects connection" in superuser and '"postgres"' in superuser, superuser
    wrong = run(server, prober, f"{login} \"$(echo $DATABASE_URL | sed -E 's#:[^:@]*@#:wrong@#')\"")
    assert "password authentication failed" in wrong, wrong


def test_a_one_off_dyno_over_its_memory_is_killed_and_logged_as_r15(
    server: WakaServer, apps: tuple[str, str]
) -> None:
    prober, _ = apps
    attached = server.heroku(
        "run", "-x", "--no-tty", "-a", prober, "--", "python3 probe.py hog", check=False
    )
    assert attached.returncode == 137, attached  # SIGKILL, from the kernel
    detached = server.heroku("run:detached", "-a", prober, "--", "python3 probe.py hog")
    name = re.search(r"run\.\d+", detached.stdout + detached.stderr)
    assert name, detached

    def logged() -> list[str] | None:
        lines = [
            line.split(": ", 1)[1]
            for line in logs(server, prober)
            if f"heroku[{name.group()}]" in line
        ]
        return lines if "State changed from up to complete" in lines else None

    lines = wait_for(logged, 60, f"{name.group()} complete")
    at = lines.index("Error R15 (Memory quota vastly exceeded)")
    assert lines[at:] == [
        "Error R15 (Memory quota vastly exceeded)",
        "Stopping process with SIGKILL",
        "Process exited with status 137",
        "State changed from up to complete",
    ], lines

"""One-off dynos on a real Swarm (WAKA_RUNTIME=swarm): `heroku run` and `heroku run:detached`
with the real Heroku CLI against `waka up` driving a Swarm of several nodes
(tests/swarm_cluster.py).

An attached one-off's service runs on some node and connects back to waka (the manager cannot
attach to a container on another node); the CLI reaches it through the rendezvous server as
with local one-offs: output, exit status, input, a TTY of the user's size, Ctrl-C.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.swarm_cluster import SwarmCluster

from .conftest import CLI_TIMEOUT, Api, WakaServer, app_repo, git_url, running_server, wait_for
from .test_heroku_run import SIX_VERSION, bash_in_a_terminal, one_off_containers

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


@pytest.fixture(scope="module")
def swarm_server(
    swarm_cluster: SwarmCluster, heroku_cli: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WakaServer]:
    tmp = tmp_path_factory.mktemp("waka-swarm-run")
    with running_server(tmp, heroku_cli, env=swarm_cluster.waka_env()) as server:
        yield server


@pytest.fixture(scope="module")
def swarm_api(swarm_server: WakaServer) -> Iterator[Api]:
    api = Api(swarm_server)
    yield api
    api.close()


@pytest.fixture(scope="module")
def app(swarm_server: WakaServer, swarm_api: Api, tmp_path_factory: pytest.TempPathFactory) -> str:
    """python-web, pushed and released (its slug has six and a .profile.d); no web dyno, so
    whatever runs on the Swarm for it is a one-off."""
    name = swarm_api.create_app("swarm-run")
    repo = app_repo("python-web", tmp_path_factory.mktemp("repos") / name)
    pushed = repo.push(git_url(swarm_server, name))
    assert pushed.returncode == 0, pushed.output
    swarm_server.heroku("ps:scale", "web=0", "-a", name)
    return name


def one_off_services(cluster: SwarmCluster, app: str) -> list[dict[str, Any]]:
    manager = docker.DockerClient(base_url=cluster.docker_url)
    try:
        services = manager.services.list(filters={"label": ["waka.run", f"waka.app_name={app}"]})
        return [s.attrs for s in services]
    finally:
        manager.close()


def tasks_of(cluster: SwarmCluster, service_id: str) -> list[dict[str, Any]]:
    manager = docker.DockerClient(base_url=cluster.docker_url)
    try:
        return list(manager.api.tasks(filters={"service": service_id}))
    finally:
        manager.close()


def log_lines(server: WakaServer, app: str) -> list[str]:
    printed = server.heroku("logs", "-a", app, "-n", "300", check=False).stdout
    return [line.split(" ", 1)[1] for line in printed.splitlines() if " " in line]


def test_run_prints_output_and_passes_the_exit_code_back(
    swarm_server: WakaServer, swarm_cluster: SwarmCluster, app: str
) -> None:
    ran = swarm_server.heroku("run", "--no-tty", "-a", app, "--", "echo hi from $DYNO")
    assert re.fullmatch(r"hi from run\.\d{4}", ran.stdout.strip()), ran
    failed = swarm_server.heroku(
        "run",
        "--no-tty",
        "-x",
        "-a",
        app,
        "--",
        "bash",
        "-c",
        "echo before; exit 3",
        check=False,
    )
    assert failed.returncode == 3, failed
    assert failed.stdout.splitlines() == ["before"], failed
    # The .profile.d of the slug was sourced: python3 with six.
    six = swarm_server.heroku(
        "run",
        "--no-tty",
        "-x",
        "-a",
        app,
        "--",
        "python3",
        "-c",
        "import six; print(six.__version__)",
    )
    assert six.stdout.strip() == SIX_VERSION, six
    wait_for(lambda: one_off_services(swarm_cluster, app) == [], what="the one-off services gone")
    lines = log_lines(swarm_server, app)
    # -x ran `bash -c ...; echo <status>` (the CLI reads the status from the output): 0.
    assert any(
        re.fullmatch(r"heroku\[run\.\d{4}\]: Process exited with status 0", x) for x in lines
    )
    assert not any("WAKA_RELAY_TOKEN" in line or "relay" in line for line in lines), lines


def test_input_reaches_the_process(swarm_server: WakaServer, app: str) -> None:
    # With --no-tty, stdin is the connection: it ends when the CLI's input does (cat returns).
    piped = swarm_server.heroku(
        "run", "--no-tty", "-x", "-a", app, "--", "cat; echo end", input="line one\nline two\n"
    )
    assert piped.stdout.splitlines() == ["line one", "line two", "end"], piped
    # Without it the dyno has a TTY: the CLI's input is typed into it.
    typed = swarm_server.heroku(
        "run", "-x", "-a", app, "--", "read x; echo got $x", input="typed\n"
    )
    assert "got typed" in typed.stdout.splitlines(), typed


def test_run_bash_interactively_in_a_terminal(swarm_server: WakaServer, app: str) -> None:
    bash_in_a_terminal(swarm_server, app)


def test_a_one_off_runs_on_a_swarm_node_shows_in_ps_and_ends_with_its_user(
    swarm_server: WakaServer, swarm_cluster: SwarmCluster, swarm_api: Api, app: str
) -> None:
    wait_for(lambda: one_off_services(swarm_cluster, app) == [], what="earlier one-offs removed")
    cli = subprocess.Popen(
        [
            str(swarm_server.heroku_cli),
            "run",
            "--no-tty",
            "-a",
            app,
            "--",
            "echo started; sleep 300",
        ],
        cwd=swarm_server.cli_home,
        env=swarm_server.heroku_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        nodes = {n.node_id: n.name for n in swarm_cluster.nodes()}

        def running() -> tuple[dict[str, Any], dict[str, Any]] | None:
            services = one_off_services(swarm_cluster, app)
            if len(services) != 1:
                return None
            tasks = [
                t
                for t in tasks_of(swarm_cluster, services[0]["ID"])
                if t["Status"]["State"] == "running"
            ]
            return (services[0], tasks[0]) if tasks else None

        service, task = wait_for(running, timeout=120, what="the one-off's task running")
        # On a node of the Swarm, not on this host's engine.
        assert task["NodeID"] in nodes, (task["NodeID"], nodes)
        assert one_off_containers(swarm_api, app) == []
        labels = service["Spec"]["Labels"]
        assert "waka.dyno" not in labels and labels["waka.attach"] == "1", labels
        name = labels["waka.run"]
        # `heroku ps` shows it, and on which node (--extended).
        shown = wait_for(
            lambda: [
                d
                for d in swarm_api.get(f"/apps/{app}/dynos?extended=true")
                if d["name"] == name and d["state"] == "up"
            ],
            what=f"{name} up in heroku ps",
        )
        assert (
            shown[0]["type"] == "run" and shown[0]["extended"]["instance"] == nodes[task["NodeID"]]
        )
        assert name in swarm_server.heroku("ps", "-a", app).stdout
        assert labels["waka.command"] == "echo started; sleep 300"
        env = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
        token = next(e.split("=", 1)[1] for e in env if e.startswith("WAKA_RELAY_TOKEN="))
        cli.send_signal(signal.SIGINT)  # the CLI closes its connection on Ctrl-C
        cli.communicate(timeout=CLI_TIMEOUT)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    wait_for(
        lambda: one_off_services(swarm_cluster, app) == [],
        timeout=30,
        what="the one-off stopped and its service removed",
    )
    wait_for(
        lambda: f"heroku[{name}]: Process exited with status 137" in log_lines(swarm_server, app),
        what="its end in the log",
    )
    # The relay's one-time token is in no log.
    assert token not in "\n".join(log_lines(swarm_server, app)) and token not in swarm_server.log()


def test_run_detached_logs_to_the_app_s_log(
    swarm_server: WakaServer, swarm_cluster: SwarmCluster, app: str
) -> None:
    started = swarm_server.heroku(
        "run:detached",
        "-a",
        app,
        "--",
        "echo hello from $DYNO on the swarm; echo to stderr >&2; exit 2",
    )
    output = started.stdout + started.stderr
    match = re.search(r"--dyno (run\.\d{4})", output)
    assert match, output
    dyno = match.group(1)

    def complete() -> list[str]:
        lines = log_lines(swarm_server, app)
        return lines if f"heroku[{dyno}]: State changed from up to complete" in lines else []

    lines = wait_for(complete, timeout=120, what=f"{dyno} complete in the log")
    assert f"app[{dyno}]: hello from {dyno} on the swarm" in lines, lines
    assert f"app[{dyno}]: to stderr" in lines, lines
    assert f"heroku[{dyno}]: Process exited with status 2" in lines, lines
    # The output came before the end.
    assert lines.index(f"app[{dyno}]: to stderr") < lines.index(
        f"heroku[{dyno}]: Process exited with status 2"
    )
    wait_for(lambda: one_off_services(swarm_cluster, app) == [], what="the service removed")


def test_after_a_crash_waka_removes_attached_one_offs_and_follows_detached_ones(
    swarm_server: WakaServer, swarm_cluster: SwarmCluster, app: str
) -> None:
    wait_for(lambda: one_off_services(swarm_cluster, app) == [], what="earlier one-offs removed")
    started = swarm_server.heroku("run:detached", "-a", app, "--", "sleep 25; echo late from $DYNO")
    match = re.search(r"--dyno (run\.\d{4})", started.stdout + started.stderr)
    assert match, started
    detached = match.group(1)
    cli = subprocess.Popen(
        [str(swarm_server.heroku_cli), "run", "--no-tty", "-a", app, "--", "sleep 300"],
        cwd=swarm_server.cli_home,
        env=swarm_server.heroku_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def both_running() -> list[str] | None:
            services = one_off_services(swarm_cluster, app)
            running = [
                s["Spec"]["Labels"]["waka.attach"]
                for s in services
                if any(t["Status"]["State"] == "running" for t in tasks_of(swarm_cluster, s["ID"]))
            ]
            return running if sorted(running) == ["0", "1"] else None

        wait_for(both_running, timeout=120, what="a detached and an attached one-off running")
        swarm_server.crash()  # kill -9: nothing of it cleans up
        swarm_server.start(same_ports=True)
    finally:
        cli.kill()
        cli.wait()
    # The attached one lost its user: removed. The detached one runs on, its output logged.
    wait_for(
        lambda: (
            [s["Spec"]["Labels"]["waka.run"] for s in one_off_services(swarm_cluster, app)]
            == [detached]
        ),
        what="the attached one-off removed, the detached one left",
    )
    wait_for(
        lambda: (
            f"heroku[{detached}]: State changed from up to complete"
            in (lines := log_lines(swarm_server, app))
            and lines
        ),
        timeout=90,
        what=f"{detached} complete in the log",
    )
    lines = log_lines(swarm_server, app)
    assert f"app[{detached}]: late from {detached}" in lines, lines
    assert f"heroku[{detached}]: Process exited with status 0" in lines, lines
    wait_for(lambda: one_off_services(swarm_cluster, app) == [], what="the service removed")

"""Without a container engine: builds and dynos as plain host processes (WAKA_RUNTIME=process),
the same behaviour apart from isolation, driven by the real git client, CLI and router."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from .conftest import Api, app_repo, git_url, start_server
from .test_run import through_router, up_dynos, wait_for

pytestmark = pytest.mark.e2e


def test_apps_build_and_run_as_host_processes(heroku_cli, tmp_path_factory):
    server = start_server(
        tmp_path_factory.mktemp("process"), heroku_cli, env={"WAKA_RUNTIME": "process"}
    )
    api = Api(server)
    try:
        assert "dynos run as processes on this host" in server.log()
        app = api.create_app("proc")
        repo = app_repo("python-web", tmp_path_factory.mktemp("proc-app") / app)
        pushed = repo.push(git_url(server, app))
        assert pushed.returncode == 0, pushed.output
        assert "Released v2" in pushed.output
        wait_for(lambda: len(up_dynos(api, app)) == 1, what="web.1 up as a process")
        response = through_router(server, app)
        assert response.status_code == 200 and "on web.1" in response.text

        server.heroku("ps:scale", "web=2", "-a", app)
        wait_for(lambda: len(up_dynos(api, app)) == 2, what="two web processes")
        served = {through_router(server, app).text.split(" on ")[-1].strip() for _ in range(30)}
        assert served == {"web.1", "web.2"}

        # A dyno killed from outside comes back (its process group: bash and the app).
        home = str(server.home / "dynos")
        pids = subprocess.run(
            ["pgrep", "-f", "python3 app.py"], capture_output=True, text=True
        ).stdout.split()
        mine = [p for p in pids if os.readlink(f"/proc/{p}/cwd").startswith(home)]
        assert len(mine) == 2, mine
        os.kill(int(mine[0]), signal.SIGKILL)
        logs = wait_for(
            lambda: (
                (out := server.heroku("logs", "-a", app).stdout)
                and "State changed from up to crashed" in out
                and len(up_dynos(api, app)) == 2
                and out
            ),
            what="the killed dyno back up",
        )
        assert "Process exited with status" in logs
    finally:
        api.close()
        server.stop_cleanly()
    leftover = subprocess.run(
        ["pgrep", "-f", "python3 app.py"], capture_output=True, text=True
    ).stdout.split()
    assert not [
        p
        for p in leftover
        if os.path.exists(f"/proc/{p}/cwd") and os.readlink(f"/proc/{p}/cwd").startswith(home)
    ], "dynos outlived waka"

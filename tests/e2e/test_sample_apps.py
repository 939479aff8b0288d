"""A public sample app, deployed as its README and Heroku's docs say: Flaskr, the blog app of
Flask's tutorial, taken from Flask's own source distribution on PyPI (`examples/tutorial`),
unchanged. What a Heroku user adds is what Heroku's Python docs ask for: a requirements.txt
(Flask, and gunicorn to serve it) and a Procfile. Real parts throughout: `waka up`, the official
Heroku CLI, git, the stack image's containers, real HTTP through the router.

Flaskr keeps its posts in SQLite under the app's `instance/` folder, so its web dyno makes the
database as it starts (`flask --app flaskr init-db`, the README's first step): on Heroku, as
here, a dyno's files are its own and a release-phase one-off would make it elsewhere.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import GitRepo, GitResult, WakaServer, git_url, unique_name, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]

FLASK = "flask>=3.1,<4"
PROCFILE = (
    'web: flask --app flaskr init-db && exec gunicorn --bind 0.0.0.0:$PORT "flaskr:create_app()"\n'
)


def flask_tutorial(dest: Path) -> Path:
    """Flask's sdist from PyPI, and its examples/tutorial (Flaskr) at `dest`."""
    download = dest.parent / "flask-sdist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            str(download),
            FLASK,
        ],
        check=True,
        timeout=300,
    )
    (sdist,) = download.glob("flask-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(download, filter="data")
    (tutorial,) = download.glob("flask-*/examples/tutorial")
    shutil.copytree(tutorial, dest)
    return dest


@pytest.fixture(scope="module")
def deployed(
    server: WakaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, GitResult]]:
    """Flaskr, created with `heroku create` and pushed with git: (app name, the push)."""
    app = unique_name("flaskr")
    repo_dir = flask_tutorial(tmp_path_factory.mktemp("flaskr") / "tutorial")
    assert (repo_dir / "flaskr" / "__init__.py").is_file(), "no Flaskr in Flask's sdist"
    (repo_dir / "requirements.txt").write_text("flask\ngunicorn\npytest\n")
    (repo_dir / "Procfile").write_text(PROCFILE)
    repo = GitRepo(repo_dir)
    repo.run("init", "--quiet", "--initial-branch=main")
    repo.commit_all("Flaskr from Flask's tutorial, with a Procfile")
    server.heroku("apps:create", app)
    pushed = repo.push(git_url(server, app))
    try:
        yield app, pushed
    finally:
        server.heroku("apps:destroy", app, "--confirm", app, check=False)


def test_the_push_installs_flask_and_releases(deployed: tuple[str, GitResult]) -> None:
    _, pushed = deployed
    assert pushed.returncode == 0, pushed.output
    remote = pushed.remote()
    assert any(
        line.startswith("Successfully installed") and "lask-3." in line for line in remote
    ), remote
    assert any(re.search(r"Released v\d+", line) for line in remote), remote


def test_a_user_registers_logs_in_and_posts_through_the_router(
    server: WakaServer, deployed: tuple[str, GitResult]
) -> None:
    app, _ = deployed
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{server.router_port}",
        headers={"Host": f"{app}.localhost"},
        timeout=30,
    )

    def index() -> str | None:
        response = client.get("/")
        return response.text if response.status_code == 200 else None

    page = wait_for(index, timeout=120, what="Flaskr answering through the router")
    assert "<h1>Posts</h1>" in page and "Register" in page, page
    account = {"username": "ada", "password": "lovelace"}
    registered = client.post("/auth/register", data=account)
    assert registered.status_code == 302, registered.text
    assert registered.headers["location"].endswith("/auth/login"), registered.headers
    logged_in = client.post("/auth/login", data=account)
    assert logged_in.status_code == 302 and "session" in client.cookies, logged_in.text
    title = f"Deployed on waka {unique_name('post')}"
    posted = client.post("/create", data={"title": title, "body": "Through the router."})
    assert posted.status_code == 302, posted.text
    page = client.get("/").text
    assert title in page and "by ada" in page, page
    # Registering the same name again is the app's own error, shown on its page.
    again = client.post("/auth/register", data=account)
    assert again.status_code == 200 and "User ada is already registered." in again.text


def test_the_apps_own_tests_pass_in_a_one_off_dyno(
    server: WakaServer, deployed: tuple[str, GitResult]
) -> None:
    """The README's Test step (`pytest`), in `heroku run`: the slug holds the app whole."""
    app, _ = deployed
    ran = server.heroku(
        "run",
        "-x",
        "-a",
        app,
        "--",
        "python",
        "-m",
        "pytest",
        "-q",
        "--color=no",
        "-p",
        "no:cacheprovider",
    )
    summary = ran.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in [\d.]+s", summary), ran.stdout

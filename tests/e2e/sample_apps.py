"""Public sample apps for the e2e tests, as a user gets them: Flaskr, the blog app of Flask's
tutorial, from Flask's own source distribution on PyPI (`examples/tutorial`), unchanged but for
what Heroku's Python docs ask a user to add (a requirements.txt and a Procfile)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx

from .conftest import GitRepo, WakaServer, unique_name, wait_for

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


def flaskr_repo(dest: Path) -> GitRepo:
    """Flaskr with what Heroku's Python docs ask a user to add, committed: a git work tree."""
    repo_dir = flask_tutorial(dest)
    assert (repo_dir / "flaskr" / "__init__.py").is_file(), "no Flaskr in Flask's sdist"
    (repo_dir / "requirements.txt").write_text("flask\ngunicorn\npytest\n")
    (repo_dir / "Procfile").write_text(PROCFILE)
    repo = GitRepo(repo_dir)
    repo.run("init", "--quiet", "--initial-branch=main")
    repo.commit_all("Flaskr from Flask's tutorial, with a Procfile")
    return repo


def blog_through_the_router(router_port: int, app: str) -> None:
    """What a Flaskr user does, through the router: register, log in, post, see the post."""
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{router_port}",
        headers={"Host": f"{app}.localhost"},
        timeout=30,
    )

    def index() -> str | None:
        response = client.get("/")
        return response.text if response.status_code == 200 else None

    with client:
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


def assert_its_own_tests_pass(server: WakaServer, app: str) -> None:
    """The README's Test step (`pytest`), in `heroku run`: the slug holds the app whole."""
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

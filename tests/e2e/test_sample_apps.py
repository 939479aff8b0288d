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
from collections.abc import Iterator

import pytest

from .conftest import GitResult, WakaServer, git_url, unique_name
from .sample_apps import assert_its_own_tests_pass, blog_through_the_router, flaskr_repo

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


@pytest.fixture(scope="module")
def deployed(
    server: WakaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, GitResult]]:
    """Flaskr, created with `heroku create` and pushed with git: (app name, the push)."""
    app = unique_name("flaskr")
    repo = flaskr_repo(tmp_path_factory.mktemp("flaskr") / "tutorial")
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
    assert any(line.startswith("Successfully installed") and "lask-3." in line for line in remote)
    assert any(re.search(r"Released v\d+", line) for line in remote), remote


def test_a_user_registers_logs_in_and_posts_through_the_router(
    server: WakaServer, deployed: tuple[str, GitResult]
) -> None:
    app, _ = deployed
    blog_through_the_router(server.router_port, app)


def test_the_apps_own_tests_pass_in_a_one_off_dyno(
    server: WakaServer, deployed: tuple[str, GitResult]
) -> None:
    """The README's Test step (`pytest`), in `heroku run`: the slug holds the app whole."""
    app, _ = deployed
    assert_its_own_tests_pass(server, app)

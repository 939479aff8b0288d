"""Buildpack behaviour Heroku users rely on, pushed with the real git client to a real `waka up`
that builds in the stack image and runs dynos on Docker:

- a Django app gets `manage.py collectstatic --noinput` (its collected files are in the slug, and
  the app serves them), which the config var DISABLE_COLLECTSTATIC=1 turns off; its
  bin/pre_compile and bin/post_compile hooks run, and what they make reaches the running app;
- a Node.js app without package-lock.json builds with `npm install` and a warning;
- an app in a language waka has no buildpack for (Go) and one with no language at all are
  refused, the push rejected with a message saying why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Api, GitResult, WakaServer, app_repo, git_url, wait_for
from .test_git_push import REJECTED_BY_HOOK, deployed, index_of, remote_head, versions
from .test_run import through_router, up_dynos

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]

DJANGO = "5.2.19"  # tests/fixtures/apps/django-web/requirements.txt
SITE_CSS = (Path(__file__).parents[1] / "fixtures/apps/django-web/static/css/site.css").read_text()


def in_order(result: GitResult, *texts: str) -> None:
    """Each text is in a `remote:` line, in this order."""
    remote = result.remote()
    positions = [index_of(remote, text) for text in texts]
    assert positions == sorted(positions), result.output


def test_django_collectstatic_hooks_and_disable_collectstatic(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("django")
    url = git_url(server, app)
    repo = app_repo("django-web", tmp_path / "django-web")

    pushed = repo.push(url)
    deployed(pushed, 2)
    in_order(
        pushed,
        "-----> Python app detected",
        "-----> Running bin/pre_compile hook",
        "pre_compile: writing static/generated.txt",
        f"Successfully installed Django-{DJANGO}",
        "-----> $ python manage.py collectstatic --noinput",
        "2 static files copied to '/app/staticfiles'.",
        "-----> Running bin/post_compile hook",
        f"post_compile ran in /app with Django {DJANGO}",
        "Released v2",
    )

    # The running app serves what collectstatic put in STATIC_ROOT, including the file that
    # bin/pre_compile made, and what bin/post_compile wrote.
    wait_for(lambda: len(up_dynos(api, app)) == 1, what="web.1 up")
    css = wait_for(
        lambda: (r := through_router(server, app, "/static/css/site.css")).status_code == 200 and r,
        what="the collected site.css served",
    )
    assert css.text == SITE_CSS
    generated = through_router(server, app, "/static/generated.txt")
    assert (generated.status_code, generated.text) == (200, "made by bin/pre_compile\n")
    hook = through_router(server, app, "/hook")
    assert (hook.status_code, hook.text) == (
        200,
        f"post_compile ran in /app with Django {DJANGO}\n",
    )

    # DISABLE_COLLECTSTATIC=1 as a config var: the next build skips the step.
    server.heroku("config:set", "DISABLE_COLLECTSTATIC=1", "-a", app)
    (repo.path / "README.md").write_text("Deployed without collectstatic.\n")
    repo.commit_all("A change, to push again")
    pushed = repo.push(url)
    deployed(pushed, 4)
    remote = pushed.remote()
    in_order(
        pushed,
        "-----> Skipping Django collectstatic since the env var DISABLE_COLLECTSTATIC is set.",
        "-----> Running bin/post_compile hook",
        "Released v4",
    )
    assert not any("collectstatic --noinput" in line for line in remote), pushed.output
    assert not any("static files copied" in line for line in remote), pushed.output
    # The new release's slug has no STATIC_ROOT: once its dyno serves, the static files 404.
    wait_for(
        lambda: through_router(server, app, "/static/css/site.css").status_code == 404,
        what="site.css gone with collectstatic skipped",
    )
    assert through_router(server, app, "/hook").status_code == 200


def test_node_app_without_a_lock_file_builds_with_npm_install_and_a_warning(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("node-nolock")
    repo = app_repo("node-web", tmp_path / "node-nolock")
    repo.run("rm", "--quiet", "package-lock.json")
    repo.commit_all("No lock file")

    pushed = repo.push(git_url(server, app))
    deployed(pushed, 2)
    in_order(
        pushed,
        "-----> Node.js app detected",
        "!     No package-lock.json: installing with `npm install`",
        "-----> Installing dependencies with npm install",
        "added 1 package",
        "-----> Running build",
        "Released v2",
    )
    assert "-----> Installing dependencies with npm ci" not in pushed.remote()
    wait_for(lambda: len(up_dynos(api, app)) == 1, what="web.1 up")
    served = wait_for(
        lambda: (r := through_router(server, app)).status_code == 200 and r, what="node-web"
    )
    assert served.text.startswith("Hello from node-web (built at ")


def refused(result: GitResult, message: str) -> None:
    """The push was rejected, the build's summary being `message`."""
    assert result.returncode != 0, result.output
    assert REJECTED_BY_HOOK in result.output
    remote = result.remote()
    assert any(line.startswith(f"!     {message}") for line in remote), result.output
    assert index_of(remote, message) < index_of(remote, "Push rejected")


def test_a_go_app_is_refused_naming_go(server: WakaServer, api: Api, tmp_path: Path) -> None:
    app = api.create_app("go-hello")
    url = git_url(server, app)
    repo = app_repo("go-hello", tmp_path / "go-hello")
    message = (
        "waka has no buildpack for Go apps (this one has a go.mod). Its built-in buildpacks "
        "build Python, Node.js, static sites and Procfile-only apps: set a Go buildpack with "
        "`heroku buildpacks:set <git URL>`, then push again."
    )

    # Its Procfile would otherwise have released it to crash-loop on a binary never built.
    pushed = repo.push(url)
    refused(pushed, message)
    assert f"!     {message}" in pushed.remote()  # the whole summary, nothing joined to it
    in_order(pushed, "-----> Go app detected", message)
    assert not any("Procfile app detected" in line for line in pushed.remote())

    repo.run("rm", "--quiet", "Procfile")
    repo.commit_all("go.mod and main.go only")
    refused(repo.push(url), message)

    # Nothing was released or run, and the branch did not move.
    assert versions(api, app) == [(1, "succeeded", True)]
    builds = api.builds(app)
    assert [b["status"] for b in builds] == ["failed", "failed"]
    assert remote_head(repo, url) is None
    assert api.get(f"/apps/{app}/dynos") == []


def test_a_repository_without_a_language_or_procfile_is_refused(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("no-language")
    url = git_url(server, app)
    repo = app_repo("no-language", tmp_path / "no-language")

    pushed = repo.push(url)
    refused(pushed, "No default language could be detected for this app.")
    remote = pushed.remote()
    assert any("Procfile" in line and "heroku buildpacks:set" in line for line in remote), remote
    assert versions(api, app) == [(1, "succeeded", True)]
    assert remote_head(repo, url) is None

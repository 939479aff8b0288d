"""A push's source blob (its code, exported for the builder) is not kept for ever: once its
build is over and WAKA_SOURCE_TTL has passed, a worker of the real `waka up` deletes it, and
the app still deploys from the next push."""

from __future__ import annotations

import pytest

from .conftest import Api, app_repo, git_url, start_server, wait_for

pytestmark = pytest.mark.e2e


def sources(server) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(p.name for p in (server.home / "sources").glob("*.tgz"))


def test_a_pushed_source_is_collected_after_its_build(heroku_cli, tmp_path_factory) -> None:
    server = start_server(
        tmp_path_factory.mktemp("sources"),
        heroku_cli,
        env={"WAKA_RUNTIME": "process", "WAKA_SOURCE_TTL": "1"},
    )
    api = Api(server)
    try:
        app = api.create_app("collected")
        repo = app_repo("shell-app", tmp_path_factory.mktemp("collected-app") / app)
        pushed = repo.push(git_url(server, app))
        assert pushed.returncode == 0 and "Released v2" in pushed.output, pushed.output
        (source,) = [b["source_blob"]["url"] for b in api.get(f"/apps/{app}/builds")]
        assert "/sources/" in source
        # Collected within a sweep (30 s) of being a second old.
        wait_for(lambda: sources(server) == [], timeout=45, what="the source collected")
        assert "collected 1 source blob(s) of finished builds" in server.log()
        (repo.path / "Procfile").write_text("web: echo again; sleep 600\n")
        repo.commit_all("again")
        again = repo.push(git_url(server, app))
        assert again.returncode == 0 and "Released v3" in again.output, again.output
    finally:
        api.close()
        server.stop_cleanly()

"""A destroyed app's git repository and build cache are removed; nothing else is. Source
blobs are collected once old, but never one a pending build still needs."""

import time
import uuid

from waka.config import Settings


def test_sweep_removes_only_destroyed_apps_files(make_platform, tmp_path):
    platform = make_platform(Settings(home=tmp_path / "waka", runtime="process"))
    owner = platform.ledger.register_user("owner@example.com")[0].as_actor()
    live = platform.ledger.create_app(owner, "live-app")
    gone = platform.ledger.create_app(owner, "gone-app")
    platform.ledger.destroy_app(owner, gone.id)
    platform.projector.catch_up()
    builder = platform.builder
    repos = platform.settings.home / "repos"
    stranger = str(uuid.uuid4())  # a directory no app in the ledger has
    for app_id in (str(live.id), str(gone.id), stranger):
        (repos / f"{app_id}.git").mkdir(parents=True)
        (builder.cache_dir(app_id) / "pip").mkdir(parents=True)
    (repos / "notes.git").mkdir()

    assert builder.sweep_destroyed() == [str(gone.id)]
    assert not (repos / f"{gone.id}.git").exists()
    assert not builder.cache_dir(str(gone.id)).exists()
    for app_id in (str(live.id), stranger):
        assert (repos / f"{app_id}.git").is_dir() and builder.cache_dir(app_id).is_dir()
    assert (repos / "notes.git").is_dir()
    assert builder.sweep_destroyed() == []


def test_old_sources_go_unless_a_pending_build_needs_them(make_platform, tmp_path):
    settings = Settings(home=tmp_path / "waka", runtime="process", source_ttl=1.0)
    platform = make_platform(settings)
    owner = platform.ledger.register_user("owner@example.com")[0].as_actor()
    app = platform.ledger.create_app(owner, "shop")
    sources = platform.sources
    tokens = {}
    for name in ("built", "pending", "uploaded"):
        tokens[name] = sources.new_token()
        with sources.upload(tokens[name]) as out:
            out.write(b"a tarball " + name.encode())
    url = f"{settings.api_url}/sources/{tokens['pending']}"
    build_id = platform.ledger.request_build(owner, app.id, url)  # no builder runs it here
    builder = platform.builder
    assert builder.sweep_sources() == []  # all younger than a second
    time.sleep(1.2)
    fresh = sources.new_token()
    with sources.upload(fresh) as out:
        out.write(b"just now")
    assert sorted(builder.sweep_sources()) == sorted([tokens["built"], tokens["uploaded"]])
    assert sources.exists(tokens["pending"]) and sources.exists(fresh)
    platform.ledger.fail_build(app.id, build_id, "gave up", owner)
    assert builder.sweep_sources() == [tokens["pending"]]  # its build is over
    assert builder.sweep_sources() == []
    assert sources.exists(fresh)

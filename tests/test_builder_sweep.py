"""A destroyed app's git repository and build cache are removed; nothing else is."""

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

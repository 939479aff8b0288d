"""No process depends on another's local disk: two platforms on one PostgreSQL schema, each
with a WAKA_HOME of its own (as an API process and a worker on two hosts), share sources,
slugs, build caches, git repositories and push records through the database."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_api import Api
from waka.adapters import blobs
from waka.adapters.git_repos import ZERO, SharedGitRepos, branches
from waka.adapters.slugs import SharedSlugStore
from waka.adapters.sources import SourceStore, SourceTooLarge
from waka.bootstrap import Platform, bootstrap
from waka.config import Settings
from waka.projections.builds import build_by_id

FIXTURE_APPS = Path(__file__).parent / "fixtures" / "apps"
GIT = ["git", "-c", "user.email=dev@example.com", "-c", "user.name=Dev"]


@pytest.fixture
def two(
    postgres_url: str, postgres_schema: str, tmp_path: Path
) -> Iterator[tuple[Platform, Platform]]:
    """Two platforms on one database schema, each with its own home."""
    opened: list[Platform] = []

    def make_platform(settings: Settings) -> Platform:
        opened.append(bootstrap(settings))
        return opened[-1]

    def settings(name: str) -> Settings:
        return Settings(
            home=tmp_path / name,
            database_url=postgres_url,
            database_schema=postgres_schema,
            runtime="process",
        )

    # Every process of a platform has the same cipher key; here the first one's.
    first = make_platform(settings("host-a"))
    key = first.settings.cipher_key
    second = make_platform(
        Settings(**{**settings("host-b").__dict__, "cipher_key": key})  # type: ignore[arg-type]
    )
    yield first, second
    for platform in opened:
        platform.close()


def tarball(directory: Path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for path in sorted(directory.rglob("*")):
            archive.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    return out.getvalue()


def test_a_source_uploaded_to_one_is_built_by_the_others_builder(
    two: tuple[Platform, Platform], tmp_path: Path
) -> None:
    api, worker = two
    assert api.settings.home != worker.settings.home
    actor = api.ledger.register_user("owner@example.com")[0].as_actor()
    app = api.ledger.create_app(actor, "shared-build")
    token = api.sources.new_token()
    with api.sources.upload(token) as sink:
        sink.write(tarball(FIXTURE_APPS / "shell-app"))
    build_id = api.ledger.request_build(
        actor, app.id, f"{api.settings.api_url}/sources/{token}", "v1"
    )
    assert not (worker.settings.home / "sources").exists()  # nothing on the worker's disk

    worker.builder.run_pending()

    worker.projector.catch_up()
    build = build_by_id(worker.store, build_id)
    assert build is not None and build["status"] == "succeeded", build
    # The slug the worker made is extracted by the other one, from the shared store.
    api.projector.catch_up()
    slug_id = build_by_id(api.store, build_id)["slug_id"]
    assert isinstance(api.slugs, SharedSlugStore)
    assert not list((api.settings.home / "slugs").glob("*.tgz"))
    slug = api.slugs.get(slug_id)
    assert slug.path.parent == api.settings.home / "slugs"
    assert slug.checksum == worker.slugs.get(slug_id).checksum
    api.slugs.extract(slug_id, tmp_path / "extracted")
    assert (tmp_path / "extracted" / "Procfile").read_text() == (
        FIXTURE_APPS / "shell-app" / "Procfile"
    ).read_text()


def test_a_slug_made_by_one_is_extracted_by_the_other(
    two: tuple[Platform, Platform], tmp_path: Path
) -> None:
    one, other = two
    app_dir = tmp_path / "app"
    (app_dir / "bin").mkdir(parents=True)
    (app_dir / "Procfile").write_text("web: bin/web\n")
    (app_dir / "bin" / "web").write_bytes(b"#!/bin/sh\n" + b"x" * 3_000_000)
    slug = one.slugs.create(app_dir)
    assert other.slugs.get(slug.id).checksum == slug.checksum
    other.slugs.extract(slug.id, tmp_path / "out")
    assert (tmp_path / "out" / "bin" / "web").read_bytes() == (app_dir / "bin/web").read_bytes()
    with pytest.raises(KeyError):
        other.slugs.get(str(uuid.uuid4()))
    with pytest.raises(KeyError):
        other.slugs.get("../../etc/passwd")


def test_each_homes_slug_cache_is_trimmed_least_used_first(
    two: tuple[Platform, Platform], tmp_path: Path
) -> None:
    one, other = two
    slugs = []
    for n in range(3):
        app_dir = tmp_path / f"app-{n}"
        app_dir.mkdir()
        (app_dir / "Procfile").write_text("web: bin/web\n")
        (app_dir / "blob").write_bytes(os.urandom(200_000))  # incompressible: ~200 KB each
        slugs.append(one.slugs.create(app_dir))
    cache = other.slugs
    assert isinstance(cache, SharedSlugStore)
    now = time.time()
    for age, slug in zip((3 * 3600, 2 * 3600, 60), slugs, strict=True):
        path = cache.get(slug.id).path
        os.utime(path, (now - age, now - age))  # used 3 h, 2 h and a minute ago
    cache.cache_bytes = 450_000  # room for two
    assert cache.trim(now) == [cache.root / f"{slugs[0].checksum[7:]}.tgz"]
    # Too little room for even one, yet one used within the hour stays: a caller may be
    # about to read it.
    cache.cache_bytes = 0
    assert [p.name for p in cache.trim(now)] == [f"{slugs[1].checksum[7:]}.tgz"]
    assert [p.name for p in cache.root.glob("*.tgz")] == [f"{slugs[2].checksum[7:]}.tgz"]
    # A slug trimmed is fetched again when needed.
    again = cache.get(slugs[0].id)
    assert again.path.exists() and again.checksum == slugs[0].checksum
    cache.extract(slugs[1].id, tmp_path / "out")
    assert (tmp_path / "out" / "Procfile").exists()


def test_the_build_cache_follows_the_app_from_worker_to_worker(
    two: tuple[Platform, Platform],
) -> None:
    one, other = two
    app_id = str(uuid.uuid4())
    cache = one.build_cache.path(app_id)
    (cache / "pip").mkdir(parents=True)
    (cache / "pip" / "wheel.whl").write_bytes(b"wheel" * 1000)
    one.build_cache.save(app_id)

    other.build_cache.restore(app_id)
    restored = other.build_cache.path(app_id) / "pip" / "wheel.whl"
    assert restored.read_bytes() == b"wheel" * 1000
    assert app_id in other.build_cache.app_ids()

    # Cleared through one process, the other's copy goes at its next restore.
    one.build_cache.clear(app_id)
    other.build_cache.restore(app_id)
    assert not other.build_cache.path(app_id).exists()


def _commit(work: Path, text: str) -> str:
    (work / "file.txt").write_text(text)
    subprocess.run([*GIT, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(work), "commit", "-qm", text], check=True)
    return subprocess.run(
        ["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _receive(repo: Path, work: Path, sha: str) -> None:
    """The pushed objects in the repository, without moving a branch (as a hook sees them)."""
    subprocess.run(
        ["git", "-C", str(repo), "fetch", "-q", str(work), f"{sha}:refs/waka-test/incoming"],
        check=True,
    )
    subprocess.run(["git", "-C", str(repo), "update-ref", "-d", "refs/waka-test/incoming"])


def test_a_push_record_is_settled_by_a_builder_in_another_process(
    two: tuple[Platform, Platform], tmp_path: Path
) -> None:
    """The API process that took a push is gone; the worker applies it from shared storage,
    and a third copy then serves the released branch."""
    api, worker = two
    assert isinstance(api.git_repos, SharedGitRepos)
    app_id = str(uuid.uuid4())
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(work)], check=True)
    first = _commit(work, "one")

    # A first push, said yes to: the canonical copy has it.
    repo = api.git_repos.ensure(app_id)
    _receive(repo, work, first)
    api.git_repos.publish(repo, "refs/heads/main", first)
    subprocess.run(["git", "-C", str(repo), "update-ref", "refs/heads/main", first], check=True)
    assert branches(worker.git_repos.ensure(app_id)) == {"refs/heads/main": first}

    # A second push: recorded, then its API process stops before the build is released.
    second = _commit(work, "two")
    _receive(repo, work, second)
    build_id = str(uuid.uuid4())
    assert api.git_repos.based_on_branch(repo, "refs/heads/main", first)
    assert not api.git_repos.based_on_branch(repo, "refs/heads/main", ZERO)
    api.git_repos.record_push(repo, build_id, "refs/heads/main", first, second)
    held = api.git_repos.try_push_lock(repo)
    assert held is not None
    assert worker.git_repos.try_push_lock(worker.git_repos.ensure(app_id)) is None
    [record] = list(worker.git_repos.unsettled())
    assert (record.build_id, record.old, record.new) == (build_id, first, second)
    assert worker.git_repos.settle(record, released=True) is False  # its hook still lives
    held.close()  # the hook's process is gone
    shutil.rmtree(repo)  # and so is its host's disk

    assert worker.git_repos.settle(record, released=True) is True
    assert list(worker.git_repos.unsettled()) == []
    assert branches(worker.git_repos.path(app_id)) == {"refs/heads/main": second}
    third = Settings(**{**api.settings.__dict__, "home": tmp_path / "host-c"})  # type: ignore[arg-type]
    copy = SharedGitRepos(
        third.home / "repos", api.blobs, third.database_url, third.database_schema
    )
    fresh = copy.ensure(app_id)
    assert branches(fresh) == {"refs/heads/main": second}
    log = subprocess.run(
        ["git", "-C", str(fresh), "log", "--format=%s", "main"], capture_output=True, text=True
    )
    assert log.stdout.split() == ["two", "one"]
    assert app_id in worker.git_repos.app_ids()
    worker.git_repos.remove(app_id)  # the app was destroyed
    assert api.blobs.stat(f"repos/{app_id}.bundle") is None


def test_build_output_written_by_one_is_followed_by_the_other(
    two: tuple[Platform, Platform],
) -> None:
    worker, api = two
    build_id = str(uuid.uuid4())
    output = worker.build_logs.open(build_id)
    output.step("Building")
    followed: list[bytes] = []
    finished = False

    def follow() -> None:
        followed.extend(api.build_logs.follow(build_id, lambda: finished, poll=0.05))

    reader = threading.Thread(target=follow)
    reader.start()
    for n in range(500):  # many lines make few rows
        output.detail(f"line {n}")
    finished = True  # the ledger says so before the builder writes its last lines
    time.sleep(0.3)
    output.detail("Released v2")
    output.close()
    reader.join(timeout=10)
    text = b"".join(followed).decode()
    assert text.splitlines()[0] == "-----> Building"
    assert text.splitlines()[-1] == "       Released v2" and len(text.splitlines()) == 502
    # A build run again after a crash appends; a replay reads it all.
    again = worker.build_logs.open(build_id)
    again.step("Building again")
    again.close()
    replay = b"".join(api.build_logs.follow(build_id, lambda: True)).decode().splitlines()
    assert replay[0] == "-----> Building" and replay[-1] == "-----> Building again"
    assert not (worker.settings.home / "builds" / f"{build_id}.log").exists()


def test_source_urls_work_through_either_api_process(two: tuple[Platform, Platform]) -> None:
    one, other = two
    first, second = Api(one), Api(other, email="other@example.com")
    made = first.post("/sources")
    assert made.status_code == 201
    url = made.json()["source_blob"]["put_url"]
    path = url.split(str(one.settings.api_port), 1)[1]
    content = os.urandom(3 << 20)  # several chunks, several writes
    assert first.client.put(path, content=content).status_code == 200
    got = second.client.get(path)
    assert got.status_code == 200 and got.content == content
    missing = second.client.get("/sources/" + "x" * 43)
    assert missing.status_code == 404 and missing.json()["id"] == "not_found"


def test_a_repository_that_cannot_be_brought_up_to_date_is_a_clear_503(
    two: tuple[Platform, Platform],
) -> None:
    platform = two[0]
    api = Api(platform)
    app = api.post("/apps", json={"name": "broken-bundle"}).json()
    blobs.put(platform.blobs, f"repos/{app['id']}.bundle", [b"not a bundle"])
    auth = "Basic " + base64.b64encode(f"x:{api.key}".encode()).decode()
    response = api.client.get(
        "/broken-bundle.git/info/refs?service=git-upload-pack", headers={"Authorization": auth}
    )
    assert response.status_code == 503, response.text
    assert response.json() == {
        "id": "unavailable",
        "message": "The app's repository is not available right now; try again.",
    }


def test_a_source_over_the_limit_leaves_nothing_in_the_database(
    two: tuple[Platform, Platform],
) -> None:
    platform = two[0]
    assert platform.blobs is not None
    sources = SourceStore(platform.blobs, prefix="sources/", limit_bytes=100_000)
    token = sources.new_token()
    with pytest.raises(SourceTooLarge), sources.upload(token) as sink:
        for _ in range(10):
            sink.write(os.urandom(30_000))
    assert not sources.exists(token)
    assert platform.blobs.keys("sources/") == []


def test_build_output_survives_a_cut_database_connection(
    two: tuple[Platform, Platform], postgres_url: str
) -> None:
    import psycopg

    worker, api = two
    build_id = str(uuid.uuid4())
    output = worker.build_logs.open(build_id)
    output.step("before")
    time.sleep(0.3)
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # as a restart would
        admin.execute("SELECT pg_terminate_backend(%s)", (output.out.conn.info.backend_pid,))
    output.step("after")
    time.sleep(0.5)
    output.close()
    lines = b"".join(api.build_logs.follow(build_id, lambda: True)).decode().splitlines()
    assert lines == ["-----> before", "-----> after"]

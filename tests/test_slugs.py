"""The local slug store: content addressing, Heroku's size limit, extraction, atomic writes."""

from __future__ import annotations

import hashlib
import os
import tarfile
import uuid
from pathlib import Path

import pytest

from waka.adapters import slugs
from waka.adapters.slugs import LocalSlugStore, SlugNotFound, SlugTooLarge


def make_app(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "Procfile").write_text("web: bin/web\n")
    os.link(root / "Procfile", root / "Procfile.hardlink")
    (root / "bin/web").write_text("#!/bin/sh\nexec python3 -m http.server $PORT\n")
    (root / "bin/web").chmod(0o755)
    (root / "node_modules/.bin").mkdir(parents=True)
    (root / "node_modules/.bin/tool").symlink_to("../../bin/web")
    (root / ".heroku").mkdir()
    (root / ".heroku/python").symlink_to("/usr/bin/python3")  # as a venv has
    return root


def test_same_content_same_slug_and_a_change_a_new_one(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    store = LocalSlugStore(tmp_path / "slugs")

    first = store.create(app)
    again = store.create(app)

    assert again == first
    hexdigest = hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert first.checksum == f"SHA256:{hexdigest}"
    assert first.path == tmp_path / "slugs" / f"{hexdigest}.tgz"
    assert first.size == first.path.stat().st_size
    assert uuid.UUID(first.id).version == 5
    assert sorted(p.name for p in (tmp_path / "slugs").iterdir()) == [first.path.name]

    (app / "Procfile").write_text("web: bin/web --changed\n")
    changed = store.create(app)
    assert changed.id != first.id and changed.checksum != first.checksum


def test_slug_members_are_under_app(tmp_path: Path) -> None:
    store = LocalSlugStore(tmp_path / "slugs")
    slug = store.create(make_app(tmp_path / "src"))

    with tarfile.open(slug.path) as tar:
        names = tar.getnames()
    assert names[0] == "./app"
    assert all(name.startswith("./app/") for name in names[1:])
    assert "./app/Procfile" in names


def test_get_finds_slugs_written_by_another_store(tmp_path: Path) -> None:
    slug = LocalSlugStore(tmp_path / "slugs").create(make_app(tmp_path / "app"))

    assert LocalSlugStore(tmp_path / "slugs").get(slug.id) == slug

    missing = str(uuid.uuid4())
    with pytest.raises(SlugNotFound, match=f"slug {missing} is not in the slug store"):
        LocalSlugStore(tmp_path / "slugs").get(missing)
    with pytest.raises(KeyError):
        LocalSlugStore(tmp_path / "slugs").get("../../etc/passwd")


def test_extract_makes_dest_the_app_directory(tmp_path: Path) -> None:
    store = LocalSlugStore(tmp_path / "slugs")
    slug = store.create(make_app(tmp_path / "src"))
    dest = tmp_path / "dyno" / "app"

    store.extract(slug.id, dest)

    assert (dest / "Procfile").read_text() == "web: bin/web\n"
    assert os.access(dest / "bin/web", os.X_OK)
    assert os.readlink(dest / "node_modules/.bin/tool") == "../../bin/web"
    assert os.readlink(dest / ".heroku/python") == "/usr/bin/python3"
    assert (dest / "Procfile.hardlink").stat().st_ino == (dest / "Procfile").stat().st_ino
    names = sorted(p.name for p in dest.iterdir())
    assert names == [".heroku", "Procfile", "Procfile.hardlink", "bin", "node_modules"]


def test_over_the_limit_is_refused_with_herokus_message(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "noise").write_bytes(os.urandom(4096))  # random: gzip cannot shrink it
    store = LocalSlugStore(tmp_path / "slugs", limit_bytes=2048)

    with pytest.raises(SlugTooLarge) as refused:
        store.create(app)

    assert str(refused.value) == "Compiled slug size: 5K is too large (max is 2K)."
    assert refused.value.size > 4096
    assert list((tmp_path / "slugs").iterdir()) == []  # neither a slug nor a temporary file


def test_herokus_message_in_megabytes() -> None:
    limit = slugs.DEFAULT_LIMIT_BYTES
    message = str(SlugTooLarge(limit + 1, limit))
    assert message == "Compiled slug size: 501M is too large (max is 500M)."


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(slugs, "write_tarball", crash)
    store = LocalSlugStore(tmp_path / "slugs")

    with pytest.raises(OSError, match="disk full"):
        store.create(make_app(tmp_path / "app"))

    assert list((tmp_path / "slugs").iterdir()) == []


def test_a_slug_appears_only_complete(tmp_path: Path, monkeypatch) -> None:
    """While the tarball is being written, no file under its final name exists."""
    seen_during_write: list[list[str]] = []
    real = slugs.write_tarball

    def watching(src, out, *, prefix):
        real(src, out, prefix=prefix)
        seen_during_write.append(sorted(p.name for p in (tmp_path / "slugs").iterdir()))

    monkeypatch.setattr(slugs, "write_tarball", watching)
    slug = LocalSlugStore(tmp_path / "slugs").create(make_app(tmp_path / "app"))

    [names] = seen_during_write
    assert len(names) == 1 and names[0].startswith(".incoming-")
    assert [p.name for p in (tmp_path / "slugs").iterdir()] == [slug.path.name]

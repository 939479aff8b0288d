"""The blob stores: files under a directory, and PostgreSQL (a schema of each test's own).

Both keep a blob whole or not at all, stream large blobs both ways, and let writers of the
same key race without losing or mixing content.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from waka.adapters import blobs
from waka.adapters.blobs import BlobNotFound, BlobStore, LocalBlobStore, PostgresBlobStore


@pytest.fixture(params=["local", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    url, schema = (
        request.getfixturevalue("postgres_url"),
        request.getfixturevalue("postgres_schema"),
    )
    made = PostgresBlobStore(url, schema, chunk_size=64 * 1024)
    yield made
    made.close()


def read_all(store: BlobStore, key: str) -> bytes:
    with store.read(key) as chunks:
        return b"".join(chunks)


def test_a_blob_is_written_read_listed_and_deleted(store: BlobStore) -> None:
    content = os.urandom(200_000)  # several chunks (64 KiB) on PostgreSQL
    info = blobs.put(store, "sources/abc.tgz", [content[:1000], content[1000:]])
    assert info.size == len(content)
    assert info.sha256 == hashlib.sha256(content).hexdigest()
    assert store.stat("sources/abc.tgz") == info
    assert read_all(store, "sources/abc.tgz") == content
    blobs.put(store, "slugs/x.tgz", [b"x"])
    assert store.keys("sources/") == ["sources/abc.tgz"]
    assert store.keys() == ["slugs/x.tgz", "sources/abc.tgz"]
    assert store.delete("sources/abc.tgz") is True
    assert store.delete("sources/abc.tgz") is False
    assert store.stat("sources/abc.tgz") is None
    with pytest.raises(BlobNotFound), store.read("sources/abc.tgz"):
        pass


def test_old_blobs_are_listed_by_age_under_a_prefix(store: BlobStore) -> None:
    blobs.put(store, "sources/old.tgz", [b"old"])
    blobs.put(store, "slugs/old.tgz", [b"old"])
    time.sleep(1.2)
    blobs.put(store, "sources/new.tgz", [b"new"])
    assert store.older_than("sources/", 1.0) == ["sources/old.tgz"]
    assert store.older_than("", 1.0) == ["slugs/old.tgz", "sources/old.tgz"]
    assert store.older_than("sources/", 60.0) == []
    blobs.put(store, "sources/old.tgz", [b"written again"])  # a blob's age is its last write
    assert store.older_than("sources/", 1.0) == []


def test_a_key_is_replaced_whole(store: BlobStore) -> None:
    blobs.put(store, "cache/app.tgz", [b"old" * 100_000])
    blobs.put(store, "cache/app.tgz", [b"new"])
    assert read_all(store, "cache/app.tgz") == b"new"
    assert store.keys() == ["cache/app.tgz"]


def test_keys_that_escape_or_hide_are_refused(store: BlobStore) -> None:
    for bad in ("../x", "a/../b", ".hidden", "/abs", "a//b", "", "a/b/"):
        with pytest.raises(ValueError):
            blobs.put(store, bad, [b"x"])


def test_an_upload_cut_off_leaves_nothing(store: BlobStore) -> None:
    blobs.put(store, "sources/kept.tgz", [b"before"])

    class CutOff(Exception):
        pass

    for key in ("sources/new.tgz", "sources/kept.tgz"):
        with pytest.raises(CutOff), store.upload(key) as out:
            out.write(os.urandom(300_000))
            raise CutOff
    assert store.stat("sources/new.tgz") is None
    assert read_all(store, "sources/kept.tgz") == b"before"
    assert store.keys() == ["sources/kept.tgz"]
    if isinstance(store, LocalBlobStore):  # no temporary file left either
        assert [p.name for p in store.root.rglob("*") if p.is_file()] == ["kept.tgz"]
    else:
        assert _chunk_versions(store) == 1


def _chunk_versions(store: PostgresBlobStore) -> int:
    with store._connection() as conn:
        return conn.execute(
            f'SELECT count(DISTINCT version) FROM "{store.schema}".waka_blob_chunks'
        ).fetchone()[0]


def test_a_reader_sees_the_blob_it_started_even_if_it_is_replaced(store: BlobStore) -> None:
    first = os.urandom(300_000)
    blobs.put(store, "repos/app.bundle", [first])
    with store.read("repos/app.bundle") as chunks:
        head = next(chunks)
        blobs.put(store, "repos/app.bundle", [b"second"])
        assert head + b"".join(chunks) == first
    assert read_all(store, "repos/app.bundle") == b"second"


def test_concurrent_writers_of_one_content_addressed_blob(store: BlobStore) -> None:
    content = os.urandom(500_000)
    key = f"slugs/{hashlib.sha256(content).hexdigest()}.tgz"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def write() -> None:
        try:
            start.wait()
            with store.upload(key) as out:
                for offset in range(0, len(content), 50_000):
                    out.write(content[offset : offset + 50_000])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert read_all(store, key) == content
    assert store.keys() == [key]
    if isinstance(store, PostgresBlobStore):
        assert _chunk_versions(store) == 1  # the versions replaced were dropped


STREAM_50_MB = """
import hashlib, os, resource, sys
from pathlib import Path
from waka.adapters import blobs
from waka.adapters.blobs import LocalBlobStore, PostgresBlobStore

kind, tmp = sys.argv[1], Path(sys.argv[2])
store = LocalBlobStore(tmp / "blobs") if kind == "local" else PostgresBlobStore(*sys.argv[3:5])
source, digest = tmp / "big.bin", hashlib.sha256()
with open(source, "wb") as out:
    for _ in range(50):
        block = os.urandom(1 << 20)
        digest.update(block)
        out.write(block)
del block
store.stat("slugs/none.tgz")  # the pool and tables are made before the measure
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
info = blobs.put_file(store, "slugs/big.tgz", source)
copied = blobs.get_file(store, "slugs/big.tgz", tmp / "copy.bin")
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024
assert info.sha256 == copied.sha256 == digest.hexdigest(), "content differs"
assert info.size == copied.size == 50 << 20
print(grown)
store.close()
"""


def test_fifty_megabytes_stream_both_ways(
    store: BlobStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """50 MiB in and out through files, in a fresh process whose peak memory grows far less
    than the blob (a store holding it whole would grow by 50 MiB or more)."""
    args = ["local", str(tmp_path)]
    if isinstance(store, PostgresBlobStore):
        args = ["postgres", str(tmp_path), store.url, store.schema]
    done = subprocess.run(
        [sys.executable, "-c", STREAM_50_MB, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stderr
    grown_mib = int(done.stdout.split()[-1])
    assert grown_mib < 20, f"peak memory grew by {grown_mib} MiB"


def test_a_connection_cut_by_the_server_is_replaced(
    postgres_url: str, postgres_schema: str
) -> None:
    """As after a restart of PostgreSQL: the pool's connection is gone; the next use works."""
    import psycopg

    store = PostgresBlobStore(postgres_url, postgres_schema)
    try:
        blobs.put(store, "sources/a.tgz", [b"a"])
        with store.connection() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert read_all(store, "sources/a.tgz") == b"a"
        assert store.stat("sources/a.tgz") is not None
    finally:
        store.close()

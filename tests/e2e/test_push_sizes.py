"""Real repository sizes over git smart HTTP and the builds API: a 50 MB push of incompressible
data, a history of 2,000 commits, a push cut off half way, and a 50 MB source upload (whole and
cut off). Pushes over a few hundred KB used to hang or corrupt the pack: the streaming response
listened for a disconnect with a `receive()` of its own, which took pack chunks away.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import FIXTURE_APPS, Api, GitRepo, WakaServer, app_repo, git_url, wait_for
from .processes import git_processes, wait_until_git_ends
from .test_git_push import deployed, remote_head

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]

MB = 1024 * 1024


def random_file(path: Path, size: int) -> str:
    """`size` bytes that no compression shrinks; their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(size // MB):
            chunk = os.urandom(MB)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_50_mb_push_of_incompressible_data_deploys_whole(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("big")
    url = git_url(server, app)
    repo = app_repo("static-site", tmp_path / "big")
    digest = random_file(repo.path / "blob.bin", 50 * MB)
    sha = repo.commit_all("50 MB of random data")

    deployed(repo.push(url), 2)
    assert remote_head(repo, url) == sha
    # Every byte arrived: a fresh clone has the same file, and the slug holds it.
    clone = GitRepo(tmp_path / "clone")
    clone.run("clone", "--quiet", url, str(clone.path), cwd=tmp_path)
    assert sha256_of(clone.path / "blob.bin") == digest
    [build] = api.builds(app)
    slug = api.get(f"/apps/{app}/slugs/{build['slug']['id']}")
    assert slug["size"] > 50 * MB
    assert git_processes(server.home) == {}


def fast_import_history(repo: GitRepo, commits: int) -> str:
    """`commits` commits on main, each changing history.txt, written with git fast-import."""
    stream = io.StringIO()
    lines: list[str] = []
    for n in range(1, commits + 1):
        lines.append(f"change {n}")
        content = "\n".join(lines) + "\n"
        message = f"commit {n}\n"
        stream.write("commit refs/heads/main\n")
        stream.write(f"committer Dev <dev@example.com> {1_700_000_000 + n} +0000\n")
        stream.write(f"data {len(message)}\n{message}")
        if n == 1:
            stream.write("from refs/heads/main^0\n")
        stream.write(f"M 100644 inline history.txt\ndata {len(content.encode())}\n{content}\n")
    repo_git = ["git", "-C", str(repo.path), "fast-import", "--quiet"]
    subprocess.run(repo_git, input=stream.getvalue().encode(), check=True, timeout=120)
    repo.run("reset", "--quiet", "--hard", "main")
    return repo.head()


def test_a_history_of_2000_commits_pushes_and_deploys(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("history")
    url = git_url(server, app)
    repo = app_repo("static-site", tmp_path / "history")
    sha = fast_import_history(repo, 2000)
    assert repo.run("rev-list", "--count", "main").output.strip() == "2001"

    deployed(repo.push(url), 2)
    assert remote_head(repo, url) == sha
    clone = GitRepo(tmp_path / "clone")
    clone.run("clone", "--quiet", url, str(clone.path), cwd=tmp_path)
    assert clone.run("rev-list", "--count", "main").output.strip() == "2001"
    assert (clone.path / "history.txt").read_text().splitlines()[-1] == "change 2000"


def pkt_line(text: bytes) -> bytes:
    return f"{len(text) + 4:04x}".encode() + text


@contextlib.contextmanager
def half_a_push(server: WakaServer, app: str, repo: GitRepo, sha: str) -> Iterator[None]:
    """What `git push` sends (the ref update, then the pack), stopped half way; the
    connection stays open until the block ends, with git reading the pack."""
    pack = subprocess.run(
        ["git", "-C", str(repo.path), "pack-objects", "--stdout", "--revs", "--quiet"],
        input=f"{sha}\n".encode(),
        capture_output=True,
        check=True,
    ).stdout
    command = f"{'0' * 40} {sha} refs/heads/main\0report-status side-band-64k\n".encode()
    body = pkt_line(command) + b"0000" + pack
    auth = base64.b64encode(f"x:{server.api_key}".encode()).decode()
    head = (
        f"POST /{app}.git/git-receive-pack HTTP/1.1\r\nHost: localhost:{server.port}\r\n"
        f"Authorization: Basic {auth}\r\n"
        "Content-Type: application/x-git-receive-pack-request\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
        client.sendall(head + body[: len(body) // 2])
        wait_for(lambda: git_processes(server.home), timeout=30, what="git receiving the pack")
        yield


def test_a_push_cut_off_half_way_leaves_nothing_and_the_next_push_works(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("cutoff")
    url = git_url(server, app)
    repo = app_repo("static-site", tmp_path / "cutoff")
    random_file(repo.path / "blob.bin", 20 * MB)
    sha = repo.commit_all("20 MB")
    with half_a_push(server, app, repo, sha):
        time.sleep(0.5)  # git is reading the pack now; then the client goes away.

    wait_until_git_ends(server.home)
    # Nothing recorded, nothing half-stored.
    assert remote_head(repo, url) is None
    assert api.builds(app) == []
    assert [r["version"] for r in api.releases(app)] == [1]
    app_id = api.get(f"/apps/{app}")["id"]
    objects = server.home / "repos" / f"{app_id}.git" / "objects"
    assert list(objects.glob("incoming-*")) == [], "git's quarantine was left behind"
    assert list((objects / "pack").glob("*.pack")) == []
    # The server is healthy, and the whole push goes through.
    deployed(repo.push(url), 2)
    assert remote_head(repo, url) == sha


def tarball(path: Path, blob_size: int) -> str:
    """A gzipped source tarball of the static-site app plus `blob_size` random bytes."""
    blob = path.parent / "blob.bin"
    digest = random_file(blob, blob_size)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for file in (FIXTURE_APPS / "static-site").iterdir():
            tar.add(file, arcname=file.name)
        tar.add(blob, arcname="blob.bin")
    return digest


def test_a_50_mb_source_upload_builds(server: WakaServer, api: Api, tmp_path: Path) -> None:
    app = api.create_app("upload")
    source = tmp_path / "source.tgz"
    tarball(source, 50 * MB)
    blob = api.request("POST", "/sources")["source_blob"]

    def chunks():
        with source.open("rb") as data:
            while chunk := data.read(MB):
                yield chunk

    put = httpx.put(blob["put_url"], content=chunks(), timeout=120)
    assert put.status_code == 200, put.text
    with httpx.stream("GET", blob["get_url"], timeout=120) as got:
        assert got.status_code == 200
        digest = hashlib.sha256()
        for chunk in got.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == sha256_of(source)

    source_blob = {"source_blob": {"url": blob["get_url"]}}
    build = api.request("POST", f"/apps/{app}/builds", json=source_blob)
    done = wait_for(
        lambda: (b := api.get(f"/apps/{app}/builds/{build['id']}"))["status"] != "pending" and b,
        timeout=180,
        what="the build",
    )
    assert done["status"] == "succeeded"
    assert api.current_release(app)["version"] == 2


def test_a_source_upload_cut_off_stores_nothing(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    blob = api.request("POST", "/sources")["source_blob"]
    path = "/" + blob["put_url"].split("/", 3)[3]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
        client.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {50 * MB}\r\n\r\n".encode()
        )
        for _ in range(5):
            client.sendall(os.urandom(MB))
    sources = server.home / "sources"
    wait_for(
        lambda: not list(sources.glob(".upload-*")), timeout=30, what="the partial upload to go"
    )
    assert httpx.get(blob["get_url"], timeout=30).status_code == 404
    # Still serving: the same URL takes a whole upload afterwards.
    assert httpx.put(blob["put_url"], content=b"x" * 1000, timeout=30).status_code == 200
    assert httpx.get(blob["get_url"], timeout=30).content == b"x" * 1000


def test_git_paths_that_climb_out_answer_404(server: WakaServer, api: Api) -> None:
    app = api.create_app("climb")
    auth = base64.b64encode(f"x:{server.api_key}".encode()).decode()
    for path in (f"/{app}.git/../../etc/passwd", f"/{app}.git/./info/refs", f"/{app}.git//HEAD"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
            client.sendall(
                f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        status = answer.split(b"\r\n", 1)[0]
        assert status == b"HTTP/1.1 404 ", (path, answer[:300])
        assert b'"id":"not_found"' in answer.replace(b" ", b""), answer
        assert b"root:" not in answer

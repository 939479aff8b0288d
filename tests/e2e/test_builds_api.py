"""The builds API over real HTTP: upload a source tarball (`POST /sources`, then PUT), build it
(`POST /apps/:app/builds`), follow and replay its output stream; hostile tarballs are refused;
`DELETE /apps/:app/build-cache` makes the next build download its dependencies again.
"""

from __future__ import annotations

import io
import secrets
import tarfile
from pathlib import Path

import httpx
import pytest

from .conftest import (
    FIXTURE_APPS,
    GIT_TIMEOUT,
    OWNER_EMAIL,
    Api,
    GitResult,
    WakaServer,
    app_repo,
    git_url,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


# --- tarballs ---------------------------------------------------------------------------------


def file_member(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def link_member(name: str, target: str, *, hard: bool = False) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info, None


def tarball(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A gzip tarball of exactly these members, names as given (no sanitising)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def app_members(fixture: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """A fixture app's files as tarball members at the archive's root."""
    root = FIXTURE_APPS / fixture
    return [
        file_member(str(path.relative_to(root)), path.read_bytes(), path.stat().st_mode & 0o777)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    ]


def upload(api: Api, data: bytes) -> str:
    """`POST /sources`, PUT the tarball to its put_url; the get_url to build from."""
    blob = api.request("POST", "/sources")["source_blob"]
    assert set(blob) >= {"get_url", "put_url"}, blob
    assert blob["get_url"].startswith(f"http://localhost:{api.server.port}/")
    # The URLs are the permission, as signed URLs are: no API key.
    put = httpx.put(blob["put_url"], content=data, timeout=60)
    assert put.status_code == 200, put.text
    got = httpx.get(blob["get_url"], timeout=60)
    assert got.status_code == 200 and got.content == data
    return blob["get_url"]


def follow(url: str) -> str:
    """Read an output stream to its end."""
    with httpx.stream("GET", url, timeout=GIT_TIMEOUT) as response:
        assert response.status_code == 200
        return b"".join(response.iter_bytes()).decode()


# --- builds -----------------------------------------------------------------------------------

RELEASE_PHASE = "release: echo 'release phase: started'; sleep 2; echo 'release phase: finished'\n"


def test_build_from_an_uploaded_tarball(server: WakaServer, api: Api) -> None:
    app = api.create_app("tarball")
    # The shell app, with a release phase that keeps the build running a while.
    members = app_members("shell-app")
    procfile = next(data for info, data in members if info.name == "Procfile")
    assert procfile is not None
    members = [(i, d) for i, d in members if i.name != "Procfile"]
    members.append(file_member("Procfile", procfile + RELEASE_PHASE.encode()))
    source_url = upload(api, tarball(members))

    build = api.request(
        "POST",
        f"/apps/{app}/builds",
        json={"source_blob": {"url": source_url, "version": "v1.0"}},
    )
    assert build["status"] == "pending"
    assert build["source_blob"]["url"] == source_url
    assert build["source_blob"]["version"] == "v1.0"
    assert build["user"]["email"] == OWNER_EMAIL
    assert build["release"] is None
    stream_url = build["output_stream_url"]
    assert stream_url.startswith("http")

    # The stream delivers the log while the build runs and ends when it is finished.
    statuses = []
    chunks = []
    with httpx.stream("GET", stream_url, timeout=GIT_TIMEOUT) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            if not chunks:
                statuses.append(api.get(f"/apps/{app}/builds/{build['id']}")["status"])
            chunks.append(chunk)
    streamed = b"".join(chunks).decode()
    assert statuses == ["pending"], "the first output came only after the build finished"
    lines = [line.strip() for line in streamed.splitlines()]
    assert "-----> Procfile app detected" in lines
    assert "release phase: finished" in lines
    assert "Released v2" in lines

    finished = api.get(f"/apps/{app}/builds/{build['id']}")
    assert finished["status"] == "succeeded"
    release = api.current_release(app)
    assert release["version"] == 2
    assert finished["release"] == {"id": release["id"]}
    assert finished["slug"] == release["slug"]
    assert release["description"].startswith("Deploy")
    slug = api.get(f"/apps/{app}/slugs/{finished['slug']['id']}")
    assert set(slug["process_types"]) == {"web", "worker", "release"}
    assert [b["id"] for b in api.builds(app)] == [build["id"]]

    # Replayed afterwards: the whole log again.
    assert follow(stream_url) == streamed
    assert server.ledger_app(app).current_release == 2


def test_build_from_a_tarball_with_one_top_level_directory(server: WakaServer, api: Api) -> None:
    """GitHub's archives (`.../archive/main.tar.gz`, Heroku's own example for this API) hold
    the source in one top-level directory; Heroku builds what is inside it."""
    app = api.create_app("github-tarball")
    top = tarfile.TarInfo("shell-app-main")
    top.type, top.mode = tarfile.DIRTYPE, 0o755
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [(top, None)]
    for info, data in app_members("shell-app"):
        members.append((info.replace(name=f"shell-app-main/{info.name}"), data))
    source_url = upload(api, tarball(members))

    build = api.request("POST", f"/apps/{app}/builds", json={"source_blob": {"url": source_url}})
    log = follow(build["output_stream_url"])
    assert "-----> Procfile app detected" in log, log
    assert "Released v2" in log, log
    finished = api.get(f"/apps/{app}/builds/{build['id']}")
    assert finished["status"] == "succeeded"
    slug = api.get(f"/apps/{app}/slugs/{finished['slug']['id']}")
    assert set(slug["process_types"]) == {"web", "worker"}


def test_builds_api_refuses_bad_requests(server: WakaServer, api: Api) -> None:
    app = api.create_app("bad-builds")
    api.request("POST", f"/apps/{app}/builds", json={}, expect=422)
    api.request("POST", f"/apps/{app}/builds", json={"source_blob": {"url": ""}}, expect=422)
    api.request("GET", f"/apps/{app}/builds/{'0' * 8}-0000-4000-8000-{'0' * 12}", expect=404)
    missing = httpx.get(f"http://127.0.0.1:{server.port}/sources/no-such-token")
    assert missing.status_code == 404
    assert api.builds(app) == []
    assert [r["version"] for r in api.releases(app)] == [1]


# --- hostile tarballs -------------------------------------------------------------------------

ROOT_UP = "../" * 40  # from wherever the build extracts, up to the file system's root


def hostile(case: str, outside: Path, absolute: Path) -> tuple[list, str]:
    """The members of a hostile tarball, and what the refusal must say."""
    procfile = file_member("Procfile", b"web: sleep infinity\n")
    if case == "dotdot":
        return [procfile, file_member("../evil", b"x")], "'../evil' has a '..' component"
    if case == "dotdot-to-root":
        name = ROOT_UP + str(outside / "evil").lstrip("/")
        return [procfile, file_member(name, b"x")], "has a '..' component"
    if case == "absolute":
        return [procfile, file_member(str(absolute), b"x")], f"'{absolute}' has an absolute path"
    if case == "symlink-absolute":
        members = [procfile, link_member("link", str(outside)), file_member("link/pwned", b"x")]
        return members, "'link' is a symlink to an absolute path"
    if case == "symlink-relative":
        target = ROOT_UP + str(outside).lstrip("/")
        members = [procfile, link_member("a", target), file_member("a/pwned", b"x")]
        return members, "'a' is a symlink that leads outside"
    if case == "symlink-chain":
        # `d/up` stays inside and `up/..` looks like `d` on paper, but followed through the
        # first link the second leads out.
        members = [
            procfile,
            link_member("d/up", ".."),
            link_member("d/escape", "up/.."),
            file_member("d/escape/" + str(outside / "pwned").lstrip("/"), b"x"),
        ]
        return members, "'d/escape' is a symlink that leads outside"
    if case == "hardlink":
        members = [procfile, link_member("passwd", "/etc/passwd", hard=True)]
        return members, "'passwd' (a hard link) has an absolute path"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "dotdot",
        "dotdot-to-root",
        "absolute",
        "symlink-absolute",
        "symlink-relative",
        "symlink-chain",
        "hardlink",
    ],
)
def test_hostile_tarball_is_refused(
    server: WakaServer, api: Api, tmp_path: Path, case: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    absolute = Path(f"/tmp/evil-{secrets.token_hex(8)}")
    members, reason = hostile(case, outside, absolute)
    app = api.create_app(f"hostile-{case}")
    source_url = upload(api, tarball(members))

    build = api.request("POST", f"/apps/{app}/builds", json={"source_blob": {"url": source_url}})
    log = follow(build["output_stream_url"])
    assert reason in log, log
    assert "Push rejected" in log
    assert "Released" not in log

    assert api.get(f"/apps/{app}/builds/{build['id']}")["status"] == "failed"
    assert [(r["version"], r["current"]) for r in api.releases(app)] == [(1, True)]
    assert list(outside.iterdir()) == []
    assert not absolute.exists()
    ledger = server.ledger_app(app)
    assert (ledger.current_release, ledger.slug_id, ledger.pending_builds) == (1, None, [])


# --- the build cache --------------------------------------------------------------------------


def test_clearing_the_build_cache_downloads_dependencies_again(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("cache")
    url = git_url(server, app)
    repo = app_repo("python-web", tmp_path / "python-web")

    def push(version: int) -> GitResult:
        repo.commit_all(f"Deploy v{version}")
        pushed = repo.push(url)
        assert pushed.returncode == 0, pushed.output
        assert f"Released v{version}" in pushed.remote(), pushed.output
        return pushed

    first = push(2)
    assert "Downloading six" in first.output
    cached = push(3)
    assert "-----> Using cached dependencies" in cached.remote()
    assert "Downloading" not in cached.output

    response = api.client.delete(f"/apps/{app}/build-cache")
    assert response.status_code == 202, response.text

    again = push(4)
    assert "-----> Installing requirements with pip" in again.remote()
    assert "Collecting six" in again.output
    assert "Downloading six" in again.output  # not even pip's own cache is left
    assert "Using cached" not in again.output
    assert api.current_release(app)["version"] == 4
    assert [b["status"] for b in api.builds(app)] == ["succeeded"] * 3

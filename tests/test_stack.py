"""The stack image: the mirror comes from the machine's apt sources; the built image works.

Tests of the built image need a Docker engine and the image (`waka stack build`, which
scripts/test-deps runs): skipped without them, except under CI (env CI set), where they fail.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from waka.adapters import stack
from waka.adapters.runtime import docker_client
from waka.adapters.stack import StackError, chroot_sources, find_mirror
from waka.cli import main

DEB822 = """\
# An old mirror, switched off.
Types: deb
URIs: http://old.invalid/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://sources.invalid/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://security.invalid/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
# a comment inside the paragraph
URIs: http://mirror.invalid/debian
  http://second.invalid/debian
Suites: bookworm
 bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

ONE_LINE = """\
# deb http://commented.invalid/debian bookworm main
deb-src http://sources.invalid/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://updates.invalid/debian bookworm-updates main
deb [ arch=amd64 ] http://oneline.invalid/debian/ bookworm main contrib  # trailing comment
"""


def apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    root = apt_dir(tmp_path, {"sources.list.d/debian.sources": DEB822})
    assert find_mirror(apt_dir=root, environ={}) == "http://mirror.invalid/debian"


def test_mirror_from_one_line_sources_list(tmp_path: Path) -> None:
    root = apt_dir(tmp_path, {"sources.list": ONE_LINE})
    assert find_mirror(apt_dir=root, environ={}) == "http://oneline.invalid/debian"


def test_sources_list_comes_first_then_the_directory_in_order(tmp_path: Path) -> None:
    root = apt_dir(
        tmp_path,
        {
            "sources.list": "deb http://security.invalid/debian-security bookworm-security main\n",
            "sources.list.d/b.list": "deb http://b.invalid/debian bookworm main\n",
            "sources.list.d/a.sources": DEB822,
            "sources.list.d/0.list.disabled": "deb http://disabled.invalid/debian bookworm main\n",
        },
    )
    assert find_mirror(apt_dir=root, environ={}) == "http://mirror.invalid/debian"


def test_only_the_base_suite_counts(tmp_path: Path) -> None:
    root = apt_dir(
        tmp_path,
        {"sources.list": "deb http://a.invalid/debian bookworm-updates main\n"},
    )
    with pytest.raises(StackError, match="WAKA_STACK_MIRROR"):
        find_mirror(apt_dir=root, environ={})


def test_environment_overrides_the_sources(tmp_path: Path) -> None:
    root = apt_dir(tmp_path, {"sources.list.d/debian.sources": DEB822})
    environ = {"WAKA_STACK_MIRROR": "https://override.invalid/debian/"}
    assert find_mirror(apt_dir=root, environ=environ) == "https://override.invalid/debian"

    with pytest.raises(StackError, match="not an http"):
        find_mirror(apt_dir=root, environ={"WAKA_STACK_MIRROR": "override.invalid/debian"})


def test_the_stack_gets_the_machines_updates_and_security_sources(tmp_path: Path) -> None:
    root = apt_dir(tmp_path, {"sources.list.d/debian.sources": DEB822})
    mirror = find_mirror(apt_dir=root, environ={})

    assert chroot_sources(mirror, apt_dir=root, environ={}).splitlines() == [
        "deb http://mirror.invalid/debian bookworm main",
        "deb http://security.invalid/debian-security bookworm-security main",
        "deb http://mirror.invalid/debian bookworm-updates main",
        "deb http://second.invalid/debian bookworm-updates main",
    ]
    override = {"WAKA_STACK_MIRROR": "http://override.invalid/debian"}
    assert chroot_sources("http://override.invalid/debian", apt_dir=root, environ=override) == (
        "deb http://override.invalid/debian bookworm main\n"
    )


def test_the_stack_has_what_apps_and_buildpacks_need() -> None:
    """Close to Heroku's build image: `python`, a C toolchain, libpq's headers and pg_config
    (psycopg2 from source), and the tools the official buildpacks call."""
    needed = {
        "python-is-python3",
        "python3-dev",
        "build-essential",
        "libpq-dev",
        "libssl-dev",
        "libffi-dev",
        "zlib1g-dev",
        "libxml2-dev",
        "jq",
        "make",
        "xz-utils",
        "unzip",
        "file",
        "curl",
        "git",
        "nodejs",
    }
    assert needed <= set(stack.PACKAGES), needed - set(stack.PACKAGES)
    assert len(set(stack.PACKAGES)) == len(stack.PACKAGES), "a package is listed twice"
    assert set(stack.RUN_PACKAGES).isdisjoint(stack.BUILD_PACKAGES)
    assert {"python", "gcc", "pg_config", "jq", "make", "xz", "unzip", "file"} <= set(stack.TOOLS)


class FakeImage:
    def __init__(self, packages: tuple[str, ...] | None) -> None:
        self.id = "sha256:old"
        self.labels = {stack.PACKAGES_LABEL: " ".join(packages)} if packages else {}


class FakeClient:
    def __init__(self, packages: tuple[str, ...] | None) -> None:
        import docker.errors

        image = FakeImage(packages)
        self.images = type(
            "Images",
            (),
            {
                "get": lambda _, name: (
                    image
                    if packages is not None
                    else (_ for _ in ()).throw(docker.errors.ImageNotFound(name))
                )
            },
        )()


@pytest.mark.parametrize(
    ("built_with", "force", "rebuilds"),
    [
        (stack.PACKAGES, False, False),
        (tuple(reversed(stack.PACKAGES)), False, False),  # the same list, another order
        (stack.PACKAGES, True, True),
        (stack.PACKAGES[:5], False, True),  # an image from an older, shorter list
        ((), False, True),  # an image with no package label: made before there was one
        (None, False, True),  # no image
    ],
)
def test_build_keeps_an_up_to_date_image_and_rebuilds_an_outdated_one(
    monkeypatch: pytest.MonkeyPatch, built_with, force: bool, rebuilds: bool
) -> None:
    monkeypatch.setattr(stack, "_preflight", lambda: FakeClient(built_with))

    def bootstrap_starts(**_: object) -> str:
        raise StackError("the build would start here")

    monkeypatch.setattr(stack, "find_mirror", bootstrap_starts)
    said: list[str] = []
    if rebuilds:
        with pytest.raises(StackError, match="would start"):
            stack.build_stack(force=force, say=said.append)
    else:
        assert stack.build_stack(force=force, say=said.append) == 0.0
        assert "exists" in said[0]
    outdated = built_with is not None and not force and set(built_with) != set(stack.PACKAGES)
    assert ("another package list" in " ".join(said)) == outdated


def test_build_directory_is_unmounted_before_it_is_deleted(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("host file")
    work = tmp_path / "work"
    (work / "rootfs/proc").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(precious), str(work / "rootfs/proc")], check=True)

    stack._remove(work, say=print)

    assert not work.exists()
    assert (precious / "keep").read_text() == "host file"


# --- the built image --------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


@pytest.fixture(scope="module")
def client():
    engine = docker_client()
    reason = None
    if engine is None:
        reason = "no Docker engine answers"
    elif not stack.image_exists(engine):
        reason = f"no {stack.STACK_IMAGE} image (run `waka stack build`)"
    if reason:
        if in_ci():
            pytest.fail(f"{reason}: CI needs Docker and the stack image (scripts/test-deps)")
        pytest.skip(reason)
    return engine


def test_the_image_has_python_node_npm_and_git(client) -> None:
    python, node, npm, git = stack.check_image(client)
    assert python.startswith("Python 3.")
    assert node.startswith("v")
    assert npm[0].isdigit()
    assert git.startswith("git version")

    labels = client.images.get(stack.STACK_IMAGE).labels
    assert labels["waka.stack"] == stack.STACK_NAME
    assert labels["waka.python3"] == python
    assert stack.built_with(client) == stack.PACKAGES, "rebuild it: `waka stack build`"


@pytest.mark.parametrize(
    "tool", ["python", "gcc", "pg_config", "jq", "make", "xz", "unzip", "file", "curl"]
)
def test_the_image_has_the_tool(client, tool: str) -> None:
    found = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network=none",
            stack.STACK_IMAGE,
            "sh",
            "-c",
            f"command -v {tool}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.returncode == 0, f"{tool} is not in {stack.STACK_IMAGE}: {found}"
    assert found.stdout.startswith("/usr/bin/"), found.stdout


def test_python_is_python_3_and_compiles_against_libpq(client) -> None:
    """`python` is the stack's Python 3, and a C program builds against libpq's headers with
    the flags pg_config gives (what psycopg2's setup does), then runs."""
    program = """\
#include <libpq-fe.h>
#include <stdio.h>
int main(void) { printf("libpq %d\\n", PQlibVersion()); return 0; }
"""
    script = (
        'python --version && cd /tmp && printf "%s" "$PROGRAM" > t.c'
        ' && gcc -I"$(pg_config --includedir)" t.c -L"$(pg_config --libdir)" -lpq -o t && ./t'
    )
    docker_run = ["docker", "run", "--rm", "--network=none", "-e", f"PROGRAM={program}"]
    ran = subprocess.run(
        [*docker_run, stack.STACK_IMAGE, "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran
    version, libpq = ran.stdout.splitlines()
    assert version.startswith("Python 3."), ran.stdout
    assert libpq.startswith("libpq ") and int(libpq.split()[1]) >= 150000, ran.stdout


def test_check_image_names_a_missing_tool(client) -> None:
    with pytest.raises(StackError, match="lacks no-such-tool"):
        stack.check_image(client, tools=("make", "no-such-tool"))


def test_stack_build_keeps_an_existing_image(client, capsys) -> None:
    before = client.images.get(stack.STACK_IMAGE).id

    assert main(["stack", "build"]) == 0

    assert "exists" in capsys.readouterr().out
    assert client.images.get(stack.STACK_IMAGE).id == before

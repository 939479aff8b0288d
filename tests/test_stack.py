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


def test_stack_build_keeps_an_existing_image(client, capsys) -> None:
    before = client.images.get(stack.STACK_IMAGE).id

    assert main(["stack", "build"]) == 0

    assert "exists" in capsys.readouterr().out
    assert client.images.get(stack.STACK_IMAGE).id == before

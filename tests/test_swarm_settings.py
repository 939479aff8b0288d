"""WAKA_RUNTIME=swarm refuses to start, saying why, when there is no Swarm to run dynos on:
no registry named, no engine answering, or an engine that is no Swarm manager (the host's
own engine is not one: the test Swarm's nodes are containers). `waka worker`/`up` print the
reason and exit 1, with no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from waka.adapters.runtime import docker_client
from waka.adapters.swarm_dynos import SwarmUnavailable
from waka.bootstrap import bootstrap
from waka.config import Settings


def test_no_registry_named(tmp_path: Path) -> None:
    platform = bootstrap(Settings(home=tmp_path / "waka", runtime="swarm"))
    with pytest.raises(SwarmUnavailable, match="needs WAKA_SWARM_REGISTRY"):
        platform.dyno_manager  # noqa: B018 (made on first use)


def test_no_engine_at_the_manager_url(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "waka",
        runtime="swarm",
        swarm_registry="127.0.0.1:1",
        swarm_manager="tcp://127.0.0.1:1",
    )
    with pytest.raises(SwarmUnavailable, match="no Docker engine answers"):
        bootstrap(settings).dyno_manager  # noqa: B018


def test_an_engine_that_is_no_swarm_manager(tmp_path: Path) -> None:
    client = docker_client()
    if client is None:
        pytest.skip("no Docker engine here")
    if (client.info().get("Swarm") or {}).get("LocalNodeState") == "active":
        pytest.skip("this host's engine is in a Swarm: the test needs one that is not")
    settings = Settings(home=tmp_path / "waka", runtime="swarm", swarm_registry="127.0.0.1:1")
    with pytest.raises(SwarmUnavailable, match="not a Swarm manager"):
        bootstrap(settings).dyno_manager  # noqa: B018


def test_the_cli_says_why_and_exits_1(tmp_path: Path) -> None:
    env = {"WAKA_HOME": str(tmp_path / "waka"), "WAKA_RUNTIME": "swarm", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "waka",
            "up",
            "--api-port",
            "0",
            "--router-port",
            "0",
            "--rendezvous-port",
            "0",
            "--api-tls-port",
            "0",
            "--router-tls-port",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 1, done
    assert "waka: WAKA_RUNTIME=swarm needs WAKA_SWARM_REGISTRY" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr

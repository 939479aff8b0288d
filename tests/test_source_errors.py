"""A source URL's credentials (a signed URL's path and query, a user's password) never reach
the build output or the ledger through a download error."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from waka.adapters.sources import SourceError, SourceStore


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_failed_download_names_the_host_but_not_the_credentials(tmp_path: Path) -> None:
    store = SourceStore(tmp_path / "sources")
    port = closed_port()
    url = f"http://user:hunter2@127.0.0.1:{port}/bucket/secret-path.tgz?X-Signature=s3cr3t"
    with pytest.raises(SourceError) as error:
        store.fetch(url, tmp_path / "out.tgz")
    message = str(error.value)
    assert f"http://127.0.0.1:{port}" in message
    for secret in ("hunter2", "user", "secret-path", "s3cr3t", "X-Signature"):
        assert secret not in message


def test_a_url_that_is_not_http_is_refused_without_echoing_it(tmp_path: Path) -> None:
    store = SourceStore(tmp_path / "sources")
    with pytest.raises(SourceError, match="must be http or https, not 'ftp'"):
        store.fetch("ftp://me:pw@example.com/x.tgz", tmp_path / "out.tgz")
    with pytest.raises(SourceError, match="not a URL without a scheme") as error:
        store.fetch("token-without-scheme", tmp_path / "out.tgz")
    assert "token-without-scheme" not in str(error.value)

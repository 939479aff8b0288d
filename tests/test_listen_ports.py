"""`waka up` and the roles refuse, before starting, a port given to two of their listeners:
each listener alone would pass the "is it free" probe, and the second to bind would fail
mid-start with a traceback (while the first answered on the port as if all were well)."""

from __future__ import annotations

from pathlib import Path

import pytest

from waka.cli import main


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--api-port", "5999", "--router-port", "5999"], "--api-port and --router-port"),
        (["--api-port", "5999", "--rendezvous-port", "5999"], "--api-port and --rendezvous-port"),
        (["--router-port", "5999", "--router-tls-port", "5999"], "--router-port and --router-tls"),
    ],
)
def test_one_port_for_two_listeners_is_refused_clearly(
    args: list[str], said: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("WAKA_HOME", str(tmp_path / "home"))
    assert main(["up", *args]) == 1
    err = capsys.readouterr().err
    assert said in err and "both port 5999" in err and "Traceback" not in err
    assert not (tmp_path / "home").exists()  # refused before anything was made

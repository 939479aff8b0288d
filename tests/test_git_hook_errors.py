"""The pre-receive hook never shows a pusher a traceback: git prints whatever the hook writes
as `remote:` lines, so a failure is one clear line, and the traceback goes to the operator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ZERO = "0" * 40
NEW = "1" * 40


def run_hook(home: Path, repo: Path, **env: str) -> subprocess.CompletedProcess[str]:
    repo.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "waka.git_hook"],
        input=f"{ZERO} {NEW} refs/heads/main\n",
        cwd=repo,
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "WAKA_HOME": str(home),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_unreadable_key_is_one_line_to_the_pusher(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "cipher.key").write_text("not a key\n")
    done = run_hook(home, tmp_path / "repo.git")
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert output.startswith(" !     waka cannot open its ledger: "), output
    assert "Traceback" not in output


def test_an_internal_error_is_logged_for_the_operator_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # No WAKA_GIT_APP_ID: the hook cannot know the app (a broken installation).
    done = run_hook(home, tmp_path / "repo.git")
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert output.strip() == (
        "!     Internal error while taking this push; the operator's log has the details."
    ), output
    log = (home / "logs" / "git-hook.log").read_text()
    assert "Traceback" in log and "WAKA_GIT_APP_ID" in log

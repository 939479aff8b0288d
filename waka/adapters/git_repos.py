"""Every app's bare git repository, and the record a push leaves while its build runs.

git updates a pushed branch only after the pre-receive hook (waka/git_hook.py) says yes, and
the hook says yes only when the build is released. If the platform stops during the build,
the hook gives up, git leaves the branch alone, and the build, still pending in the ledger,
is finished by the builder after the restart. The push record is how the branch then catches
up: the hook writes `waka-pushes/<build id>` (ref, old, new) before it requests the build, and
removes it when it hands the branch update back to git. A record whose hook is gone (the
push lock is free) is settled by the builder: the branch moves to the released commit if it
still points where the push found it, and the record goes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOOKS = {
    "pre-receive": "#!/bin/sh\n# Installed by waka: every push builds the app.\n"
    "exec {python} -m waka.git_hook\n",
    "post-receive": "#!/bin/sh\nexec {python} -m waka.git_hook post-receive\n",
}
LOCK = "waka-push.lock"  # held by a pre-receive hook for its whole life
RECORDS = "waka-pushes"
BUILD_ID = re.compile(r"^[0-9a-f-]{36}$")


@dataclass(frozen=True)
class PushRecord:
    app_id: str
    build_id: str
    ref: str
    old: str
    new: str


class GitRepos:
    def __init__(self, root: Path) -> None:
        self.root = root  # $WAKA_HOME/repos: one `<app id>.git` each

    def path(self, app_id: str) -> Path:
        return self.root / f"{app_id}.git"

    def ensure(self, app_id: str) -> Path:
        """The app's bare repository (by id, so a rename keeps it), created on first use,
        with waka's hooks pointing at this Python."""
        repo = self.path(app_id)
        if not (repo / "HEAD").exists():
            repo.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(repo)],
                check=True,
            )
            subprocess.run(
                ["git", "-C", str(repo), "config", "http.receivepack", "true"], check=True
            )
        for name, template in HOOKS.items():
            hook = repo / "hooks" / name
            text = template.format(python=sys.executable)
            if not hook.exists() or hook.read_text() != text:
                hook.write_text(text)
                hook.chmod(0o755)
        return repo

    # --- push records ---------------------------------------------------------------------

    @staticmethod
    def record_push(repo: Path, build_id: str, ref: str, old: str, new: str) -> None:
        """Called by the hook (holding the push lock) before it requests the build."""
        records = repo / RECORDS
        records.mkdir(exist_ok=True)
        tmp = records / f".{build_id}.tmp"
        tmp.write_text(f"{ref} {old} {new}\n")
        os.replace(tmp, records / build_id)

    @staticmethod
    def forget_push(repo: Path, build_id: str) -> None:
        (repo / RECORDS / build_id).unlink(missing_ok=True)

    @staticmethod
    def keep_pushed_objects(repo: Path) -> None:
        """Called by a hook giving up: git keeps a push's objects in quarantine until the hook
        says yes and deletes them otherwise, so the branch could never move to the commit
        later. Objects are immutable and named by their content: copying them into the
        repository's store changes nothing but that they stay (unreferenced until settled)."""
        quarantine = os.environ.get("GIT_QUARANTINE_PATH")
        if not quarantine:
            return
        source, store = Path(quarantine), repo / "objects"
        files = [f for f in source.rglob("*") if f.is_file() and not f.name.startswith("tmp_")]
        files.sort(key=lambda f: f.suffix == ".idx")  # a pack's index last: git finds it by that
        for file in files:
            target = store / file.relative_to(source)
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".waka-{target.name}.tmp")
            try:
                os.link(file, tmp)
            except OSError:
                shutil.copyfile(file, tmp)
            os.replace(tmp, target)

    def unsettled(self) -> Iterator[PushRecord]:
        for record in self.root.glob(f"*.git/{RECORDS}/*"):
            if not BUILD_ID.fullmatch(record.name):
                continue
            try:
                ref, old, new = record.read_text().split()
            except (OSError, ValueError):
                continue
            app_id = record.parent.parent.name.removesuffix(".git")
            yield PushRecord(app_id, record.name, ref, old, new)

    def settle(self, push: PushRecord, released: bool) -> bool:
        """Finish a push whose hook is gone: move the branch to the released commit (only if
        it is still where the push found it) and drop the record. False while the hook lives."""
        repo = self.path(push.app_id)
        with _push_lock(repo) as held:
            if not held:
                return False
            if released:
                subprocess.run(
                    ["git", "-C", str(repo), "update-ref", push.ref, push.new, push.old],
                    capture_output=True,  # a branch moved on by a later push stays
                )
            self.forget_push(repo, push.build_id)
            return True


@contextlib.contextmanager
def _push_lock(repo: Path) -> Iterator[bool]:
    try:
        lock = open(repo / LOCK, "a")  # noqa: SIM115 - closed below
    except FileNotFoundError:  # the repository is gone (app destroyed)
        yield True
        return
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        lock.close()

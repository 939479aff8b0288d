"""`$WAKA_HOME` is waka's user's alone: state and secrets are not readable by other users.

The home itself is 0700, which already closes everything in it to other users of the host;
the files and directories that hold state or secrets are also made 0600/0700 (each start fixes
a home made by an older waka, whose files were 0755/0644), so a copied or re-permissioned
home does not give them away either.

Not touched here: the slugs, the dynos' and the builds' working directories (`slugs/`,
`dynos/`, `work/`, `cache/`). Containers mount or unpack them and their users are not waka's;
their modes are the dyno and build adapters' business (they are private anyway, in the 0700
home). The CLI runs with umask 077 while it creates the stores (see waka.cli).
"""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
# State and secrets: the SQLite stores (their -wal/-shm journals too) and the cipher key.
PRIVATE_FILES = ("ledger.sqlite*", "projections.sqlite*", "cipher.key")
# Directories of state: uploaded sources, build and release output, the apps' repositories,
# waka's TLS keys, add-on providers' state (credentials among it), ACME account keys.
PRIVATE_DIRS = ("sources", "builds", "release-output", "repos", "tls", "addons", "acme")


def make_private(home: Path) -> None:
    """Create `home` (0700) if needed and take group and other access off what it holds."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    _restrict(home)
    for pattern in PRIVATE_FILES:
        for path in home.glob(pattern):
            _restrict(path)
    for name in PRIVATE_DIRS:
        _restrict(home / name)
    for key in (home / "tls").glob("*key*"):
        _restrict(key)


def _restrict(path: Path) -> None:
    """Group and other bits off; the owner's stay (a directory keeps its x)."""
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            path.chmod(stat.S_IMODE(st.st_mode) & 0o700)

"""Images a Swarm node runs dynos from: the stack, and a slug installed on it, in a registry.

A node shares no disk with waka, so a dyno cannot be handed its slug the way a local container
is (copied in before it starts). Instead each slug becomes an image once: a container of the
stack image gets the slug exactly as a local dyno does (`install_slug`: /app owned by the dyno
user, its passwd line), is committed, and pushed to the registry every node pulls from. The
image is named after the slug's checksum, so it is made once per slug however many releases,
dynos and workers use it, and a worker taking over finds it made.

Everything happens on the Swarm manager's engine (the one the dyno manager drives), so no
other engine needs to trust the registry. The stack reaches the registry the same way: the
manager pulls it from there, or it is copied from this host's engine (where `scripts/test-deps`
or the operator made it) and pushed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from waka.adapters.dyno_containers import install_slug
from waka.adapters.stack import STACK_IMAGE

log = logging.getLogger("waka.release_images")


class RegistryError(RuntimeError):
    """The registry refused an image, or the stack could not be put there."""


class ReleaseImages:
    def __init__(self, client: Any, registry: str, local: Any | None = None) -> None:
        self.client = client  # the Swarm manager's engine
        self.registry = registry  # host:port every node pulls from
        self.local = local  # this host's engine, which has the stack image when nothing else has
        self.stack = f"{registry}/{STACK_IMAGE}"
        self._pushed: set[str] = set()
        self._lock = threading.Lock()

    def of(self, slug_path: Path) -> str:
        """The image with this slug installed, in the registry (made and pushed if need be)."""
        name = f"{self.registry}/waka/slug:{slug_path.name.split('.')[0]}"
        with self._lock:
            if name in self._pushed:
                return name
            if not self._has(name):
                self._make(name, slug_path)
            self._push(name)
            self._pushed.add(name)
        return name

    # --- making ---------------------------------------------------------------------------

    def _make(self, name: str, slug_path: Path) -> None:
        self._ensure_stack()
        repository, tag = name.rsplit(":", 1)
        container = self.client.containers.create(self.stack, ["true"])
        try:
            install_slug(container, slug_path)
            container.commit(
                repository=repository,
                tag=tag,
                message=f"slug {slug_path.name}",
                # The stack's own settings stay; a dyno's command and user come from its service.
                changes=["WORKDIR /app"],
            )
        finally:
            container.remove(force=True)
        log.info("made %s", name)

    def _ensure_stack(self) -> None:
        """The stack image in the registry, under `self.stack` (with the lock held)."""
        if self.stack not in self._pushed:
            if not self._has(self.stack):
                self._pull_or_copy_stack()
            self._push(self.stack)
            self._pushed.add(self.stack)

    def _pull_or_copy_stack(self) -> None:
        import docker.errors

        repository, tag = self.stack.rsplit(":", 1)
        try:
            self.client.images.pull(repository, tag=tag)
            return
        except docker.errors.APIError as error:
            log.info("the registry has no stack image yet (%s): copying it there", error)
        if self._has(STACK_IMAGE):
            self.client.images.get(STACK_IMAGE).tag(repository, tag)
            return
        if self.local is None or not _exists(self.local, STACK_IMAGE):
            raise RegistryError(
                f"no stack image to run dynos from: neither the registry ({self.registry}) nor "
                f"this host's Docker engine has {STACK_IMAGE} (`waka stack build` makes it)"
            )
        # Streamed from one engine to the other (the stack is about 1 GB).
        self.client.images.load(self.local.images.get(STACK_IMAGE).save(named=True))
        self.client.images.get(STACK_IMAGE).tag(repository, tag)

    def _push(self, name: str) -> None:
        repository, tag = name.rsplit(":", 1)
        for line in self.client.images.push(repository, tag=tag, stream=True, decode=True):
            if "error" in line:
                raise RegistryError(f"the registry {self.registry} refused {name}: {line['error']}")

    def _has(self, name: str) -> bool:
        return _exists(self.client, name)


def _exists(client: Any, name: str) -> bool:
    import docker.errors

    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False

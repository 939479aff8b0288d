"""Adapters: narrow interfaces to the outside world (Docker, git, slug store, add-on providers)."""

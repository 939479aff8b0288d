"""The audit log by actor: access changes and add-on events (plan changes, pg:reset, attach,
rename, destroy) are in it, under the app they concern, with who did them; no config."""

from __future__ import annotations

from waka import audit
from waka.domain.actors import OPERATOR

DB_CONFIG = {"URL": "postgres://u1:secret@127.0.0.1:5432/d1"}


def test_access_changes_and_add_on_events_by_actor(platform, make_actor) -> None:
    owner, mate = make_actor("owner@example.com"), make_actor("mate@example.com")
    ledger = platform.ledger
    shop = ledger.create_app(owner, "shop")
    other = ledger.create_app(owner, "other")
    ledger.add_collaborator(owner, shop.id, "mate@example.com")
    cache = ledger.create_addon(mate, shop.id, "heroku-redis:mini", name="cache-one")
    assert ledger.complete_provisioning(cache.id, DB_CONFIG, OPERATOR)
    ledger.change_addon_plan(mate, cache.id, "premium-0")
    db = ledger.create_addon(owner, shop.id, "heroku-postgresql", name="db-one")
    assert ledger.complete_provisioning(db.id, DB_CONFIG, OPERATOR)
    ledger.request_reset(mate, db.id)
    ledger.attach_addon(owner, db.id, other.id, "SHOPDB")
    ledger.rename_addon(owner, db.id, "db-two")
    ledger.destroy_addon(mate, cache.id)
    ledger.remove_collaborator(owner, shop.id, "mate@example.com")

    by_mate = [(e.app, e.action) for e in audit.query(ledger, actor="mate@example.com")]
    assert by_mate == [
        ("shop", "Create add-on cache-one (heroku-redis:mini)"),
        ("shop", "Change cache-one plan from mini to premium-0"),
        ("shop", "Reset db-one"),
        ("shop", "Release v4: Detach REDIS (@ref:cache-one)"),
        ("shop", "Detach cache-one"),
        ("shop", "Destroy add-on cache-one"),
    ]
    by_owner = [(e.app, e.action) for e in audit.query(ledger, actor="owner@example.com")]
    assert ("shop", "Grant mate@example.com access (view, deploy, operate)") in by_owner
    assert ("shop", "Revoke mate@example.com's access") in by_owner
    assert ("other", "Attach db-one as SHOPDB") in by_owner
    assert ("shop", "Rename add-on db-one to db-two") in by_owner
    on_other = [e.action for e in audit.query(ledger, app="other")]
    assert "Attach db-one as SHOPDB" in on_other and "Reset db-one" not in on_other
    lines = "\n".join(e.line() for e in audit.query(ledger))
    assert "secret" not in lines and "u1:" not in lines  # an add-on's config never shows

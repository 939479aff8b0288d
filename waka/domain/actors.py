"""Who did it: every ledger event carries an actor, so the audit log is a query over the ledger."""

Actor = dict[str, str]  # {"id": account id, "email": ...}

OPERATOR: Actor = {"id": "", "email": "operator"}  # the `waka` CLI run on the host itself

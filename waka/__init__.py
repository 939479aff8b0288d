"""waka: a self-hosted Heroku built on an append-only release ledger."""

"""``chatlog rebuild`` and ``chatlog import`` (the read models)."""

"""SQLite read models built from the log."""

"""SQL storage shared by the built-in plugins that keep state in ``[storage] url``: opening
the database (SQLite or PostgreSQL, pooled) and versioned schemas, one per plugin."""

"""Store implementations; import them from `agents_persistence` rather than from here."""

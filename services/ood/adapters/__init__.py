"""File-system adapters: what the OOD service reads from a model bundle."""

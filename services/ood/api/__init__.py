"""HTTP layer of the OOD service."""

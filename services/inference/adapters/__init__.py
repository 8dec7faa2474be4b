"""HTTP clients for the OOD and reports services (implement domain.ports)."""

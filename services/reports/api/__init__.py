"""HTTP interface of the reports service (internal routes only)."""

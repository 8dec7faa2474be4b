"""The reports service: the one database (tenants, API keys, batches, jobs, reports)."""

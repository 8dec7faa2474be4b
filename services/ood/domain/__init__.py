"""Pure scoring and decision logic (numpy and contracts only)."""

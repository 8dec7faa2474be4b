"""Pure logic of the reports service: errors, job lifecycle, cursors, API keys (no I/O)."""

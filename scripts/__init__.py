"""Operator scripts (run with the venv's python)."""

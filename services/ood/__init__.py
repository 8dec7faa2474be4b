"""OOD service: scores a model output and decides whether it may be shown as a triage result."""

"""The worker's domain: decode, predict, measure quality, ask OOD, build the report."""

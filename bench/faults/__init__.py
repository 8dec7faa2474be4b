"""Fault-injection building blocks for chaos tests: a TCP fault proxy and a private redis-server."""

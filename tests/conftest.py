"""Shared pytest configuration."""

from hypothesis import settings

# property-based tests draw the same examples on every run, so CI results are reproducible
settings.register_profile("ci", derandomize=True, deadline=None)
settings.load_profile("ci")

"""Shared pytest configuration."""

import os

import pytest
from hypothesis import settings

# property-based tests draw the same examples on every run, so CI results are reproducible
settings.register_profile("ci", derandomize=True, deadline=None)
settings.load_profile("ci")

# tests/data/<dataset>/data.py write the fixtures; they are scripts, not tests (and --doctest-modules would
# import both as the module `data`)
collect_ignore = ["data"]


@pytest.fixture(autouse=True, scope="session")
def _image_check_cache(tmp_path_factory):
    """Keep the image-check caches of the data modules built by tests out of the user's cache folder."""
    previous = os.environ.get("HOICLIP_CACHE_DIR")
    os.environ["HOICLIP_CACHE_DIR"] = str(tmp_path_factory.mktemp("hoiclip_cache"))
    yield
    if previous is None:
        os.environ.pop("HOICLIP_CACHE_DIR", None)
    else:
        os.environ["HOICLIP_CACHE_DIR"] = previous

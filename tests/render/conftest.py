"""Fixtures for render tests."""

import jinja2
import pytest

from digest.render.email import make_environment


@pytest.fixture
def env() -> jinja2.Environment:
    """The bundled templates."""
    return make_environment()

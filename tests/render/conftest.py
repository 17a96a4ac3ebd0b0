"""Fixtures for render tests."""

import jinja2
import pytest

from digest import render


@pytest.fixture
def env() -> jinja2.Environment:
    """The bundled templates."""
    return render.make_environment()

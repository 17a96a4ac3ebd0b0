"""Finding the external programs some render tests drive (Chromium, SpamAssassin)."""

import os
import shutil

import pytest


def require(program: str) -> str:
    """Path of `program`; skip the test when it is missing, unless DIGEST_REQUIRE_TOOLS is set (CI)."""
    path = shutil.which(program)
    if path:
        return path
    if os.environ.get("DIGEST_REQUIRE_TOOLS"):
        pytest.fail(f"{program} is not installed but DIGEST_REQUIRE_TOOLS is set (see .ci/run)")
    pytest.skip(f"{program} is not installed (apt-get install {program})")

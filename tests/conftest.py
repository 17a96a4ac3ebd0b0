"""Shared fixtures: each test in its own temp dir, a fixed clock, and a database per backend."""

import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from digest.clock import Clock, system_clock
from digest.db.engine import open_database

if TYPE_CHECKING:
    from tests.world import World

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo"
NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
KEEP_ENV = frozenset(
    {"DIGEST_TEST_DATABASE_URL", "DIGEST_REQUIRE_POSTGRES", "DIGEST_REQUIRE_TOOLS", "DIGEST_TEST_SCREENSHOTS"}
)

sys.path.insert(0, str(DEMO))  # make_feeds.py, the demo feed writer


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in its own folder with no DIGEST_* setting leaking in from outside."""
    for name in list(os.environ):
        if (name.startswith("DIGEST_") and name not in KEEP_ENV) or name == "SENDGRID_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def now() -> datetime:
    """The fixed clock of every test."""
    return NOW


@pytest.fixture(params=[False, True], ids=["lockstep", "pipelining"])
def pipelining(request: pytest.FixtureRequest) -> bool:
    """Whether the test's SMTP server offers PIPELINING (RFC 2920): the SMTP transport then sends
    the envelope and DATA in one write, otherwise one command a round trip; both must behave alike."""
    return bool(request.param)


@pytest.fixture
def wall_clock() -> Clock:
    """The real clock, handed in explicitly: only for tests that drive a real scheduler (APScheduler
    fires its jobs on the wall clock) in this process or another one. Every date such a test
    compares is read from this one clock, so it passes on any day (`.ci/run` moves the clock)."""
    return system_clock


def _postgres_url() -> str | None:
    url = os.environ.get("DIGEST_TEST_DATABASE_URL")
    if not url and os.environ.get("DIGEST_REQUIRE_POSTGRES"):
        pytest.fail("DIGEST_REQUIRE_POSTGRES is set but DIGEST_TEST_DATABASE_URL is not")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'digest.db'}"
        return
    base = _postgres_url()
    if not base:
        pytest.skip("set DIGEST_TEST_DATABASE_URL to run the PostgreSQL variant")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine on a migrated, empty database."""
    eng = open_database(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    """A copy of the demo newsletter with its feeds written for the fixed clock."""
    import make_feeds

    target = tmp_path / "demo"
    target.mkdir()
    (target / "digest.toml").write_text((DEMO / "digest.toml").read_text())
    make_feeds.write_feeds(target / "feeds", NOW)
    return target


def pytest_addoption(parser: pytest.Parser) -> None:
    """`pytest --update-golden` rewrites the golden files under tests/data/ from current output."""
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite golden files under tests/data/golden/ instead of comparing against them.",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to regenerate golden files."""
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def world(engine: sa.Engine, demo_dir: Path, now: datetime) -> "World":
    """The demo newsletter, collected, with 12 active subscribers (tests/world.py)."""
    from tests.world import make_world

    return make_world(engine, demo_dir, now, 12)

"""Start-up of the console script: a command imports only its own module's needs (issue 15).

The root group knows every command's module and help line without importing them (cli/lazy.py);
these tests hold that table to the commands themselves, in fresh interpreters as a user runs them.
"""

import os
import subprocess
import sys
from pathlib import Path

from digest.cli.lazy import COMMANDS

LAZY = "import sys; from digest.cli import main; sys.argv[0] = 'digest'; main()"
FULL = "import sys; import digest.cli; sys.argv[0] = 'digest'; digest.cli.app()"
REPORT = (
    "import sys; from digest.cli import main; sys.argv[0] = 'digest'\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "print('MODULES', ' '.join(sorted(m.split('.')[0] for m in sys.modules)), file=sys.stderr)"
)
HEAVY = {"sqlalchemy", "sqlmodel", "pydantic", "jinja2", "sendgrid", "alembic", "cryptography", "httpx"}
# What `digest status` reads needs the database and the settings, nothing that renders, sends,
# schedules, fetches or clusters (issue 15: it answers within 0.6 s as a whole process).
NOT_FOR_STATUS = {
    *("jinja2", "mjml", "markupsafe", "sendgrid", "cryptography", "itsdangerous", "email_validator"),
    *("apscheduler", "alembic", "httpx", "nh3", "regex", "numpy", "scipy", "celery", "uvicorn", "fastapi"),
}


def _run(code: str, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env |= {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"} | settings
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_the_root_help_lists_every_command_as_the_fully_imported_cli_does() -> None:
    lazy, full = _run(LAZY, "--help"), _run(FULL, "--help")
    assert lazy.returncode == full.returncode == 0, lazy.stderr + full.stderr
    assert lazy.stdout == full.stdout  # same commands, order and help lines: COMMANDS is true
    for name in COMMANDS:
        assert f" {name} " in lazy.stdout


def test_digest_help_imports_no_database_settings_or_rendering_library() -> None:
    done = _run(REPORT, "--help")
    modules = set(done.stderr.split("MODULES", 1)[1].split())
    assert "Usage: digest" in done.stdout
    assert not modules & HEAVY, modules & HEAVY


def test_a_command_is_imported_when_used_with_its_own_options_and_help() -> None:
    done = _run(LAZY, "subscribers", "--help")
    assert done.returncode == 0 and "import" in done.stdout and "export" in done.stdout
    done = _run(LAZY, "subscribers", "import", "--help")
    assert done.returncode == 0 and "--skip-invalid" in done.stdout
    typo = _run(LAZY, "stauts")
    assert typo.returncode == 2 and "Did you mean" in typo.stderr and "'status'" in typo.stderr


def test_collect_loads_no_rendering_or_delivery_library() -> None:
    # `digest collect --help` imports what the command itself imports, and nothing runs.
    done = _run(REPORT, "collect", "--help")
    modules = set(done.stderr.split("MODULES", 1)[1].split())
    assert "--all" in done.stdout
    assert "sqlalchemy" in modules  # the command module is loaded: the check below means something
    assert not modules & {"jinja2", "mjml", "sendgrid", "cryptography", "itsdangerous"}, modules


def test_the_collect_stage_loads_feed_parsers_only_to_parse_a_feed() -> None:
    # A collect whose sources all answer 304 parses nothing; forked parse workers load the parsers
    # on their first feed, while the network is waited for.
    code = (
        "import sys\n"
        "import digest.cli.daily, digest.pipeline, digest.runners.local, digest.sources.collect\n"
        "print(' '.join(sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    modules = set(done.stdout.split())
    assert "digest.sources.fetch" in modules  # the stage itself is loaded: the check below means something
    assert not modules & {"feedparser", "feedparser_rs", "regex", "digest.sources.parse", "webbrowser"}


def test_digest_status_imports_nothing_that_renders_sends_or_schedules(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'digest.db'}"
    upgraded = _run(LAZY, "db", "upgrade", DIGEST_DATABASE_URL=database)  # status need not migrate
    assert upgraded.returncode == 0, upgraded.stderr
    done = _run(REPORT, "status", DIGEST_DATABASE_URL=database)
    modules = set(done.stderr.split("MODULES", 1)[1].split())
    assert "scheduler: not running" in done.stdout and "Next sends" in done.stdout, done.stdout + done.stderr
    assert "sqlalchemy" in modules  # the report is of the command that ran
    assert not modules & NOT_FOR_STATUS, modules & NOT_FOR_STATUS


def test_a_command_runs_with_the_garbage_collector_on() -> None:
    # main() switches the collector off while the command's module is imported, and lazy.py back on.
    code = REPORT.replace(
        "print('MODULES'", "import gc; print('GC', gc.isenabled(), file=sys.stderr); print('MODULES'"
    )
    done = _run(code, "subscribers", "--help")
    assert "GC True" in done.stderr, done.stderr


def test_the_distributed_coordinator_loads_no_fetcher() -> None:
    # `digest send` with DIGEST_BROKER_URL imports runners/celery.py before it queues a batch; the
    # collect side (httpx, anyio) cost it a fifth of a second there (issue 15).
    code = "import sys\nimport digest.runners.celery\nprint(' '.join(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    modules = set(done.stdout.split())
    assert "celery" in modules  # the runner is loaded: the check below means something
    assert not modules & {"httpx", "anyio", "digest.sources.fetch", "digest.runners.collect_tasks"}

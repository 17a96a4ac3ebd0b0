"""deploy/: the Compose file follows the Compose Specification and runs what the README says,
every DIGEST_ variable it names is a setting, and the systemd units start real CLI commands.

No Docker engine runs on the machines this is tested on, so the Compose file is checked by
compose-spec (a parser of the Compose Specification), not by `docker compose config`."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from digest.cli import app
from digest.config import Settings

from .conftest import ROOT

DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
WORKER_OPTIONS = ["--pool", "threads", "--concurrency", "8"]  # digest worker's defaults


def _compose() -> dict[str, Any]:
    # PyYAML resolves the `<<: *digest` merges, as Compose does; compose-spec does not.
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def _check_spec(data: dict[str, Any]) -> list[str]:
    from compose_spec import PyCompose

    compose = PyCompose.from_json(json.dumps(data))  # ValueError when it breaks the spec
    compose.validate()
    return list(compose.service_names())


def test_compose_file_follows_the_compose_specification() -> None:
    data = _compose()
    assert sorted(_check_spec(data)) == ["postgres", "redis", "web", "worker"]
    data["services"]["worker"]["restart"] = "sometimes"  # the check can fail
    with pytest.raises(ValueError, match="sometimes"):
        _check_spec(data)


def test_compose_runs_the_web_app_and_workers_as_the_readme_says() -> None:
    services = _compose()["services"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["digest"]' in dockerfile  # so `command` is a digest subcommand
    assert services["worker"]["command"][0] == "worker"
    assert services["worker"]["command"][1:] == WORKER_OPTIONS  # the CLI's default, spelled out
    web = services["web"]
    assert web["command"][:1] == ["serve"]
    assert "--host" in web["command"] and "0.0.0.0" in web["command"]  # reachable from the proxy
    assert web["ports"] == ["127.0.0.1:8000:8000"]  # only the reverse proxy on this host sees it
    assert any("/healthz" in part for part in web["healthcheck"]["test"])
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert env["DIGEST_DATABASE_URL"].startswith("postgresql+psycopg://")  # distributed: PostgreSQL
        assert env["DIGEST_BROKER_URL"].startswith("redis://redis:")
        for needed, condition in services[name]["depends_on"].items():
            assert condition == {"condition": "service_healthy"}
            assert "healthcheck" in services[needed]  # or service_healthy would wait forever
    caddy = (DEPLOY / "Caddyfile").read_text()
    assert "reverse_proxy 127.0.0.1:8000" in caddy  # HTTPS in front of the published port


def test_every_digest_variable_in_deploy_is_a_setting_listed_in_env_example() -> None:
    settings = {f"DIGEST_{name.upper()}" for name in Settings.model_fields}
    example = set(re.findall(r"DIGEST_[A-Z_]+", (ROOT / ".env.example").read_text()))
    used = {
        name
        for path in DEPLOY.rglob("*")
        if path.is_file()
        for name in re.findall(r"DIGEST_[A-Z_]+", path.read_text())
    }
    assert {"DIGEST_DATABASE_URL", "DIGEST_BROKER_URL"} <= used
    assert used - settings == set()
    assert used - example == set()


def _unit(path: Path) -> ConfigParser:
    parser = ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(path)
    return parser


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_unit_starts_a_real_cli_command(path: Path) -> None:
    service = _unit(path)["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/srv/digest/.venv/bin/digest"  # the venv the README installs into
    group: Any = typer.main.get_command(app)  # Typer's own vendored click: typed loosely here
    command = group.commands.get(argv[1])
    assert command is not None, f"{path.name}: digest {argv[1]} is not a command"
    options = {opt for param in command.params for opt in param.opts}
    given = {arg for arg in argv[2:] if arg.startswith("--")}
    assert given <= options, f"{path.name}: digest {argv[1]} has no {given - options}"
    if argv[1] == "worker":
        assert argv[2:6] == WORKER_OPTIONS  # the CLI's default, spelled out
        defaults = {opt: param.default for param in command.params for opt in param.opts}
        assert [defaults["--pool"], defaults["--concurrency"]] == ["threads", 8]
    assert service["EnvironmentFile"] == "/srv/digest/.env"
    assert service["ReadWritePaths"] == "/srv/digest/var"  # DIGEST_VAR_DIR under ProtectSystem=strict


def test_timer_starts_the_daily_run() -> None:
    timer = _unit(DEPLOY / "systemd" / "digest-run.timer")
    assert timer["Timer"]["OnCalendar"]
    assert (DEPLOY / "systemd" / "digest-run.service").exists()  # a timer starts its namesake


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("DIGEST_REQUIRE_TOOLS"):
            pytest.fail("DIGEST_REQUIRE_TOOLS is set but systemd-analyze is not installed")
        pytest.skip("systemd-analyze is not installed")
    digest = Path(sys.executable).with_name("digest")  # the units' venv path does not exist here
    for path in (DEPLOY / "systemd").iterdir():
        text = path.read_text().replace("/srv/digest/.venv/bin/digest", str(digest))
        (tmp_path / path.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys and bad values, only printing them: any output is a finding.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr

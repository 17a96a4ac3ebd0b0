"""Settings: the environment and .env, validated once at the door (the newsletter file, digest.toml,
is newsletter.py's)."""

import logging
import math
import os
import re
import secrets
from collections import Counter
from collections.abc import Mapping
from datetime import time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from digest.config_messages import misspelled_settings, plain_message
from digest.errors import SettingsError

log = logging.getLogger(__name__)

# Values people paste from docs; refusing them at start beats signing links with a public key.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "change_me", "secret", "xxx", "todo"})
# A signing key anyone can guess lets anyone forge unsubscribe and preference links (issue 12).
# The floor refuses short and repetitive keys; it cannot prove a key random, so the message says
# how to make one that is.
MIN_SECRET_LENGTH = 32
MIN_SECRET_BITS = 100  # length x the Shannon entropy of the key's own characters
MAKE_A_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def secret_bits(value: str) -> float:
    """A rough strength estimate: length times the entropy of the key's character frequencies."""
    counts, n = Counter(value), len(value)
    return -sum(c * math.log2(c / n) for c in counts.values()) if n else 0.0


def secret_weakness(value: str) -> str | None:
    """Why `value` is too weak to sign links with, or None when it passes the floor."""
    if value.strip().lower() in PLACEHOLDER_SECRETS:
        return "is empty or a placeholder"
    if len(value) < MIN_SECRET_LENGTH:
        return f"is too short ({len(value)} characters, at least {MIN_SECRET_LENGTH} needed)"
    bits = secret_bits(value)
    if bits < MIN_SECRET_BITS:
        return f"is too repetitive (about {bits:.0f} bits of variety, at least {MIN_SECRET_BITS} needed)"
    return None


def _env_name(field: str) -> str:
    if field == "sendgrid_api_key":
        return "SENDGRID_API_KEY"
    return f"DIGEST_{field.upper()}"


class Settings(BaseSettings):
    """Every environment setting of digest; build it once at the entry point with `load_settings`."""

    model_config = SettingsConfigDict(env_prefix="DIGEST_", env_file=".env", extra="ignore", frozen=True)

    config: Path = Path("digest.toml")
    database_url: str = "sqlite:///var/digest.db"
    transport: Literal["file", "smtp", "sendgrid"] = "file"
    outbox_dir: Path = Path("var/outbox")
    var_dir: Path = Path("var")
    templates_dir: Path | None = None
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["none", "starttls", "ssl"] = "none"
    smtp_timeout: float = Field(default=30.0, gt=0)
    sendgrid_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SENDGRID_API_KEY", "DIGEST_SENDGRID_API_KEY")
    )
    sendgrid_host: str = "https://api.sendgrid.com"
    secret_key: SecretStr | None = None
    base_url: str = "http://127.0.0.1:8000"
    timezone: str = "UTC"
    send_time: time = time(7, 0)
    unsubscribe_mailto: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    unsubscribe_mailbox: str | None = None  # maildir:/path or imaps://user@host[:port]/FOLDER
    unsubscribe_mailbox_password: SecretStr | None = None
    # The name your mail server writes first in its Authentication-Results headers (RFC 8601
    # authserv-id, e.g. mx.example.com); set, only its headers are trusted (issue 12).
    unsubscribe_authserv_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]+$")
    old_secret_keys: SecretStr | None = None  # comma-separated keys that still verify old links
    # Bounces by mail (issue 14): the VERP base address (bounces+TOKEN@domain), where
    # `digest bounces` reads the reports, and how many editions in a row may soft-bounce.
    bounce_address: str | None = None
    bounce_mailbox: str | None = None  # maildir:/path or imaps://user@host[:port]/FOLDER
    bounce_mailbox_password: SecretStr | None = None
    soft_bounce_limit: int = Field(default=3, ge=1, le=100)
    # Before a send (issue 14): addresses that get every real edition (inbox monitoring), outside
    # the subscriber counts; the editor's page token; an editor's approval before scheduled sends.
    seed_addresses: str | None = None  # comma-separated
    admin_token: SecretStr | None = None
    require_approval: bool = False
    # By when the approval must come: a local time "HH:MM" on the edition's date, or minutes after
    # the send time ("120"); then the edition is sent or skipped as DIGEST_APPROVAL_FALLBACK says.
    approval_deadline: str = Field(default="120", pattern=r"^(\d{1,4}|([01]?\d|2[0-3]):[0-5]\d)$")
    approval_fallback: Literal["skip", "send"] = "skip"
    send_rate: float | None = Field(default=None, gt=0)  # messages per second, all lanes together
    send_concurrency: int = Field(default=1, ge=1, le=32)  # parallel connections or requests
    sendgrid_timeout: float = Field(default=30.0, gt=0)
    sendgrid_webhook_public_key: str | None = None  # base64 DER or PEM, from the Event Webhook page
    sendgrid_webhook_max_age: int = Field(default=600, ge=1)  # replay window, seconds
    # Schedule and sign-up (issue 6). Lateness stays under a day: a later edition supersedes.
    collect_every_minutes: int = Field(default=60, ge=5, le=24 * 60)
    max_lateness_hours: float = Field(default=6.0, gt=0, le=23)
    confirm_expiry_hours: int = Field(default=72, ge=1)
    subscribe_rate_limit: int = Field(default=5, ge=1)  # sign-ups per IP address per hour
    scheduler_lease_seconds: int = Field(default=60, ge=10)
    send_batch_size: int = Field(default=500, ge=1)  # ledger rows read at a time by a send
    # Distributed mode (issue 7): a Celery broker; unset, everything runs in this process.
    broker_url: SecretStr | None = (
        None  # redis://host:6379/0 or amqp://user:pass@host// (may hold a password)
    )
    broker_queue: str = Field(default="digest", pattern=r"^[A-Za-z0-9_.:-]+$")
    claim_lease_seconds: int = Field(default=120, ge=1)  # a silent worker's rows go to others after this
    # A distributed collect gives up on the sources still unanswered after this long with no
    # answer at all; None: the fetch deadline plus 30 s (90 s by default).
    collect_wait_seconds: float | None = Field(default=None, gt=0)
    # Collection: how sources are fetched, and after how many failed runs in a row a source is flagged.
    user_agent: str | None = None  # None: "digest/VERSION (...)"; a custom value gets digest's name added
    fetch_timeout: float = Field(default=20.0, gt=0)
    # A whole fetch (redirects, headers, every byte) ends by this, however slowly a server drips.
    fetch_deadline_seconds: float = Field(default=60.0, gt=0)
    fetch_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    fetch_per_host: int = Field(default=2, ge=1, le=16)
    # 1,024 sockets at once make a thousand slow feeds one round of waiting, not four; the soft
    # open-files limit is raised for them where the hard one allows, else fewer go at once.
    fetch_concurrency: int = Field(default=1024, ge=1, le=16384)
    source_failure_alert: int = Field(default=3, ge=1)
    # Story continuity (issue 16): how many days back a new story looks for the earlier coverage
    # it continues (its "Earlier:" links); 0 turns the links off.
    thread_horizon_days: int = Field(default=14, ge=0, le=90)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Europe/Paris)") from e
        return value

    @field_validator("database_url")
    @classmethod
    def _database_driver(cls, value: str) -> str:
        # Heroku, Render, Fly and `psql` write postgres:// or postgresql:// URLs; SQLAlchemy reads
        # those as the psycopg2 driver, which digest does not install: it uses psycopg 3.
        scheme, sep, rest = value.partition("://")
        if sep and scheme.lower() in {"postgres", "postgresql"}:
            return f"postgresql+psycopg://{rest}"
        if sep and scheme.lower().startswith(("postgres+", "postgresql+")) and scheme != "postgresql+psycopg":
            raise ValueError(
                f"uses the {scheme.split('+', 1)[1]} driver; digest talks to PostgreSQL through psycopg 3: "
                f"write postgresql+psycopg://{rest.rsplit('@', 1)[-1]}"
            )
        return value

    @field_validator("bounce_address")
    @classmethod
    def _verp_base(cls, value: str | None) -> str | None:
        # "+TOKEN" takes at most 42 of the 64 octets RFC 5321 §4.5.3.1.1 allows a local part
        # (bounces.return_path), so the base keeps to 12 plain characters and has no "+" itself.
        if value is not None and not re.match(
            r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,11}@[^@\s+]+\.[^@\s+]+$", value
        ):
            raise ValueError(
                f"{value!r} is not like bounces@news.example.com: a local part of at most 12 letters, "
                "digits, '.', '_' or '-' (no '+': digest adds +TOKEN to it)"
            )
        return value

    @field_validator("seed_addresses")
    @classmethod
    def _seeds(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        # Imported here: most settings name no seed, and every command (`digest status` too) loads
        # Settings; email_validator and idna cost tens of milliseconds at start-up (issue 15).
        from email_validator import EmailNotValidError, validate_email

        seeds = []
        for i, address in enumerate((a.strip() for a in value.split(",")), 1):
            try:
                seeds.append(validate_email(address, check_deliverability=False).normalized)
            except EmailNotValidError as e:
                raise ValueError(f"address {i} ({address!r}) is not an email address: {e}") from e
        return ",".join(dict.fromkeys(seeds))

    @field_validator("admin_token")
    @classmethod
    def _strong_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        weakness = value is not None and secret_weakness(value.get_secret_value())
        if weakness:
            raise ValueError(f"{weakness}; make one with: {MAKE_A_KEY}")
        return value

    @field_validator("base_url", "sendgrid_host")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # No white space or control character anywhere: the URL goes into List-Unsubscribe headers.
        if not re.match(r"^https?://[^/\s]+", value) or re.search(r"[\s\x00-\x1f\x7f]", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("sendgrid_api_key", "smtp_password")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("is empty or a placeholder; set a real value")
        return value

    @field_validator("secret_key")
    @classmethod
    def _strong_key(cls, value: SecretStr | None) -> SecretStr | None:
        weakness = value is not None and secret_weakness(value.get_secret_value())
        if weakness:
            raise ValueError(f"{weakness}; make one with: {MAKE_A_KEY}")
        return value

    @field_validator("old_secret_keys")
    @classmethod
    def _strong_old_keys(cls, value: SecretStr | None) -> SecretStr | None:
        # An old key still verifies links: a weak one lets anyone forge them as much as a new one.
        keys = [k.strip() for k in (value.get_secret_value() if value else "").split(",") if k.strip()]
        for i, key in enumerate(keys, 1):
            weakness = secret_weakness(key)
            if weakness:
                raise ValueError(
                    f"key {i} {weakness}: links signed with it can be forged; drop it from the list"
                )
        return value

    @model_validator(mode="after")
    def _transport_needs(self) -> "Settings":
        if self.transport != "file" and self.secret_key is None:
            raise ValueError(
                f"DIGEST_SECRET_KEY: required when DIGEST_TRANSPORT={self.transport} "
                "(it signs the unsubscribe links people click)"
            )
        if self.transport == "sendgrid" and self.sendgrid_api_key is None:
            raise ValueError("SENDGRID_API_KEY: required when DIGEST_TRANSPORT=sendgrid")
        if self.broker_url is not None:
            broker = self.broker_url.get_secret_value()
            if not re.match(r"^(redis|rediss|amqp|amqps)://", broker):
                raise ValueError(
                    "DIGEST_BROKER_URL: must start with redis://, rediss://, amqp:// or amqps://"
                )
            if not self.database_url.startswith("postgresql"):
                # Workers claim rows with SELECT ... FOR UPDATE SKIP LOCKED, which SQLite lacks.
                raise ValueError(
                    "DIGEST_BROKER_URL: distributed mode requires PostgreSQL "
                    f"(DIGEST_DATABASE_URL is {self.database_url.split(':', 1)[0]}); "
                    "unset DIGEST_BROKER_URL to send from this process"
                )
        return self

    @property
    def seeds(self) -> tuple[str, ...]:
        """DIGEST_SEED_ADDRESSES as validated addresses, in order, each once."""
        return tuple(a.strip() for a in (self.seed_addresses or "").split(",") if a.strip())

    @property
    def zone(self) -> ZoneInfo:
        """The newsletter's time zone, in which edition dates are counted."""
        return ZoneInfo(self.timezone)


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment and .env, turning validation errors into one line."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        message = plain_message(err)
        if not field:  # model-level checks already name the variable
            raise SettingsError(message) from e
        raise SettingsError(f"{_env_name(field)}: {message}") from e


def settings_warnings(environ: Mapping[str, str], env_file: Path = Path(".env")) -> list[str]:
    """Names in the environment or .env that look like settings but are none (typos, mostly)."""
    return misspelled_settings(environ, env_file, [_env_name(f) for f in Settings.model_fields])


def signing_keys(settings: Settings) -> list[str]:
    """Every key that verifies links, oldest first; the last one (the current key) signs."""
    old = settings.old_secret_keys.get_secret_value() if settings.old_secret_keys else ""
    return [k.strip() for k in old.split(",") if k.strip()] + [resolve_secret_key(settings)]


def startup_warnings(settings: Settings) -> list[str]:
    """Settings that work but hurt delivery; the CLI prints them when a send or the web app starts."""
    warnings = []
    if not settings.base_url.startswith("https://"):
        warnings.append(
            f"DIGEST_BASE_URL={settings.base_url} is not https: mailbox providers only offer "
            "one-click unsubscribe (RFC 8058) for https links"
        )
    return warnings


def resolve_secret_key(settings: Settings) -> str:
    """The key that signs links: the configured one, or a dev key kept in var/ for `file`."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    if settings.transport != "file":  # the Settings validator already refuses this
        raise SettingsError("DIGEST_SECRET_KEY: required for this transport")
    path = settings.var_dir / "dev-secret-key"
    try:
        key = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        key = None
    except (OSError, UnicodeDecodeError) as e:
        # Never sign with what we could not read (issue 12: an empty key signs forgeable links).
        log.warning("dev key file %s unreadable (%s): making a new one", path, e)
        key = None
    if key is not None and (weakness := secret_weakness(key)) is None:
        return key
    if key is not None:
        log.warning("dev key file %s %s: making a new one (links signed before stop working)", path, weakness)
    return _write_dev_key(path)


def _write_dev_key(path: Path) -> str:
    """A fresh random key written to `path` (owner-only from the start), replacing what was there."""
    key = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(key + "\n")
        os.replace(temp, path)  # atomic: a reader sees the old file or the whole new one
    except OSError as e:
        raise SettingsError(
            f"DIGEST_VAR_DIR: cannot write the dev signing key {path}: {e} "
            f"(or set DIGEST_SECRET_KEY; make one with: {MAKE_A_KEY})"
        ) from e
    return key

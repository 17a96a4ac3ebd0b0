"""`digest init`: starter files for a new newsletter, never overwriting."""

from pathlib import Path

from digest.config import Settings
from digest.newsletter import Newsletter

# The starter's stand-ins (issue 14): fine for a preview or the file outbox, refused for a real
# send, where they would put a stranger's address in From: and a made-up one in the footer.
PLACEHOLDER_SENDER = "news@example.com"
PLACEHOLDER_POSTAL = "Your street, city and country"

STARTER_TOML = """# digest newsletter file. Keys: see README.md ("The newsletter file").
[newsletter]
title = "My Daily Brief"
from_email = "news@example.com"      # your sending address (a real send refuses this placeholder)
from_name = "My Daily Brief"
postal_address = "Your street, city and country"   # printed in every footer (CAN-SPAM); required
lookback_hours = 24            # how far back an edition looks (README: "The window of an edition")
# reply_to = "editor@example.com"
# catch_all_topic = "More news"    # where stories matching no topic go; "" drops them

[[topics]]
name = "EV industry"
keywords = ["electric vehicle", "EV", "battery"]

[[sources]]
name = "Example feed"
url = "https://example.com/feed.xml"   # http(s) URL, file:// URL, or a path relative to this file
topic = "EV industry"                  # optional: topic for entries that match no keyword
"""

STARTER_ENV = """# digest settings; every variable is described in .env.example.
DIGEST_TRANSPORT=file
DIGEST_BASE_URL=http://127.0.0.1:8000
DIGEST_TIMEZONE=UTC
DIGEST_SEND_TIME=07:00
"""


def write_starter_files(directory: Path) -> list[tuple[Path, bool]]:
    """Create digest.toml and .env in `directory` unless they exist; (path, created) pairs."""
    directory.mkdir(parents=True, exist_ok=True)
    results = []
    for name, content in (("digest.toml", STARTER_TOML), (".env", STARTER_ENV)):
        path = directory / name
        try:
            with path.open("x", encoding="utf-8") as fh:
                fh.write(content)
            results.append((path, True))
        except FileExistsError:
            results.append((path, False))
    return results


def placeholder_problem(settings: Settings, newsletter: Newsletter) -> str | None:
    """Why a real send (smtp, sendgrid) must not go out with the starter's stand-ins, or None."""
    if settings.transport == "file":
        return None
    info = newsletter.newsletter
    for key, value, placeholder, what in (
        ("from_email", info.from_email, PLACEHOLDER_SENDER, "your own sending address"),
        (
            "postal_address",
            info.postal_address,
            PLACEHOLDER_POSTAL,
            "your postal address (the law asks for it)",
        ),
    ):
        if value.strip().lower() == placeholder.lower():
            return (
                f"{settings.config}: newsletter.{key} is still the starter's placeholder {value!r}; "
                f"set {what} before sending with DIGEST_TRANSPORT={settings.transport}"
            )
    return None

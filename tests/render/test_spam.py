"""A rendered digest, as the outbox would hold it, scored offline by SpamAssassin: at most 1.0 point."""

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from digest.config import load_settings
from digest.db.models import Subscriber
from digest.deliver.message import to_bytes
from digest.newsletter import Newsletter, TopicConfig
from digest.render.copies import make_renderer
from tests.render import samples
from tests.render.tools import require

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


def message_bytes(tmp_path: Path, story_count: int) -> bytes:
    """One reader's full message for a `story_count`-story edition, built the way `send` builds it."""
    settings = load_settings(
        secret_key="test-secret-key-long-enough-to-sign-links",
        base_url="https://news.example.org",
        var_dir=tmp_path,
        unsubscribe_mailto="unsubscribe@evbrief.example",
    )
    newsletter = Newsletter(
        newsletter=samples.NEWSLETTER, topics=[TopicConfig(name=t) for t in samples.TOPICS[:4]]
    )
    renderer = make_renderer(settings, newsletter)
    _, rendered = renderer.digest_for(samples.edition(story_count, topics=samples.TOPICS), frozenset())
    reader = Subscriber(id=7, email="ana@example.com", name="Ana", created_at=NOW, updated_at=NOW)
    message = renderer.message(rendered, subscriber=reader, delivery_id=1, edition_id=1)
    return to_bytes(message, now=NOW)


def spam_score(raw: bytes) -> tuple[float, str]:
    """SpamAssassin's score and rule list, local tests only, no Bayes (never spamc: see STANDARDS.md)."""
    spamassassin = require("spamassassin")
    result = subprocess.run(
        [spamassassin, "-t", "-L", "-x", "--cf=use_bayes 0"],
        input=raw,
        capture_output=True,
        timeout=120,
        check=True,
    )
    out = result.stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: .*?score=(-?[\d.]+).*?tests=(.*?)\s+autolearn", out, re.M | re.S)
    assert status is not None, out[:2000]
    return float(status.group(1)), " ".join(status.group(2).split())


def test_digest_scores_at_most_one_point(tmp_path: Path) -> None:
    score, rules = spam_score(message_bytes(tmp_path, 40))
    assert score <= 1.0, rules


def test_scoring_can_fail(tmp_path: Path) -> None:
    # The same message without Date and Message-ID is penalised: the harness sees real scores.
    raw = message_bytes(tmp_path, 6)
    stripped = re.sub(rb"^(Date|Message-ID): .*\r\n", b"", raw, flags=re.M | re.I)
    score, rules = spam_score(stripped)
    assert score > 1.0, rules
    assert "MISSING_DATE" in rules

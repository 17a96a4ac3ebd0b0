"""Personalizing a 40-story digest for 100,000 subscribers in two topic segments (issue 4).

Compared: digest's way (Jinja + MJML once per segment, then a string join per reader) against
compiling MJML per subscriber. Runs on one core. Prints a readable report and `BENCH {json}`
lines that benchmarks/run.py gathers into one table.

Usage: python benchmarks/bench_render.py [--subscribers 100000] [--baseline-sample 300]
"""

import argparse
import json
import os
import re
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from digest.compose import Edition, SourceRef, StoryItem, TopicSection, for_subscriber  # noqa: E402
from digest.newsletter import NewsletterInfo  # noqa: E402
from digest.render.copies import make_renderer  # noqa: E402
from digest.render.email import (  # noqa: E402
    BodyTemplate,
    compile_mjml,
    make_environment,
    personal_values,
    render_digest,
)

TOPICS = ("EV industry", "Robotics", "Smartphones", "Space", "More news")
SEGMENTS = (frozenset(), frozenset({"EV industry", "Robotics"}))  # everything / two topics
NEWSLETTER = NewsletterInfo(
    title="EV Brief",
    from_email="news@evbrief.example",
    postal_address="1 Example Street, Springfield",
)
SUMMARY = (
    "<p>Carmakers and suppliers said on Tuesday that the new <b>battery</b> lines will start "
    'small-batch production next year, with <a href="https://news.example.com/more?id=1">details'
    "</a>. Analysts expect costs to fall as volumes rise.</p>"
)


def forty_story_edition() -> Edition:
    """Forty stories over five topics, every third with three sources."""
    base = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    sections = []
    for t, topic in enumerate(TOPICS):
        stories = []
        for k in range(8):
            n = t * 8 + k
            url = f"https://news.example.com/2026/11/25/story-{n}-about-{topic.lower().replace(' ', '-')}"
            sources = [SourceRef("Autowire", url)] + [
                SourceRef(f"Outlet {j}", f"https://outlet{j}.example.net/a/{n}") for j in (1, 2) if n % 3 == 0
            ]
            stories.append(
                StoryItem(
                    id=n,
                    title=f"Story {n}: makers race to ship the next generation of parts",
                    url=url,
                    summary_html=SUMMARY,
                    published=base - timedelta(minutes=30 * n),
                    sources=tuple(sources),
                    topic=topic,
                )
            )
        sections.append(TopicSection(topic, tuple(stories)))
    return Edition(date(2026, 11, 25), NEWSLETTER.title, tuple(sections))


def reader_values(i: int) -> dict[str, str]:
    """Personal slot values for reader number i (tokens are stand-ins of realistic length)."""
    token = f"{i:08d}.Wz{i:x}LCAxXQ.aGVsbG8td29ybGQtc2lnbmF0dXJl"
    return personal_values(
        email=f"reader{i}@example.com",
        name=f"Reader {i}",
        unsubscribe_url=f"https://news.example.org/unsubscribe/{token}",
        preferences_url=f"https://news.example.org/preferences/{token}",
    )


def per_segment(edition: Edition, subscribers: int) -> tuple[float, float, int]:
    """(seconds to render each segment once, seconds to fill every reader's bodies, bytes)."""
    env = make_environment()
    start = time.perf_counter()
    rendered = [
        render_digest(
            env,
            NEWSLETTER,
            for_subscriber(edition, seg),
            archive_url="https://news.example.org/archive/x",
            zone=UTC,
        )
        for seg in SEGMENTS
    ]
    setup = time.perf_counter() - start
    values = [reader_values(i) for i in range(subscribers)]  # not timed: data the run already has
    total = 0
    start = time.perf_counter()
    for i, v in enumerate(values):
        digest = rendered[i % 2]
        html = digest.html.fill(v)
        text = digest.text.fill(v)
        total += len(html) + len(text)
    return setup, time.perf_counter() - start, total


def per_subscriber_compile(edition: Edition, sample: int) -> float:
    """Seconds per reader when MJML is compiled for every reader (their values in the MJML source).

    The Jinja pass is done once per segment, as in digest, so only the MJML compile is repeated:
    the most favourable version of the per-subscriber approach.
    """
    env = make_environment()
    sources = []
    for seg in SEGMENTS:
        digest = render_digest(
            env,
            NEWSLETTER,
            for_subscriber(edition, seg),
            archive_url="https://news.example.org/archive/x",
            zone=UTC,
        )
        sources.append((BodyTemplate.split(digest.mjml, nonce=_nonce(digest.mjml), escape=True), digest))
    start = time.perf_counter()
    for i in range(sample):
        mjml_template, digest = sources[i % 2]
        v = reader_values(i)
        compile_mjml(env, mjml_template.fill(v))
        digest.text.fill(v)
    return (time.perf_counter() - start) / sample


def _nonce(mjml_source: str) -> str:
    match = re.search(r"@@slot-([0-9a-f]+):", mjml_source)
    assert match is not None
    return match.group(1)


def full_messages(edition: Edition, sample: int, workdir: Path) -> float:
    """Messages/s of Renderer.message: bodies plus signed links, Message-ID and List-* headers."""
    from digest.config import load_settings
    from digest.db.models import Subscriber
    from digest.newsletter import Newsletter, TopicConfig

    settings = load_settings(secret_key="bench-secret-key-0123456789abcdef", var_dir=workdir)
    newsletter = Newsletter(newsletter=NEWSLETTER, topics=[TopicConfig(name=t) for t in TOPICS])
    renderer = make_renderer(settings, newsletter)
    copies = [renderer.digest_for(edition, seg)[1] for seg in SEGMENTS]
    now = datetime(2026, 11, 25, tzinfo=UTC)
    readers = [
        Subscriber(id=i + 1, email=f"r{i}@example.com", name=f"Reader {i}", created_at=now, updated_at=now)
        for i in range(sample)
    ]
    start = time.perf_counter()
    for i, reader in enumerate(readers):
        renderer.message(copies[i % 2], subscriber=reader, delivery_id=i, edition_id=1)
    return sample / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark and print the report; returns the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--baseline-sample", type=int, default=300)
    args = parser.parse_args(argv)
    edition = forty_story_edition()
    setup, fill_seconds, total_bytes = per_segment(edition, args.subscribers)
    ours = (setup + fill_seconds) / args.subscribers
    baseline = per_subscriber_compile(edition, args.baseline_sample)
    with tempfile.TemporaryDirectory() as tmp:
        messages_per_s = full_messages(edition, min(args.subscribers, 20_000), Path(tmp))
    figures = {
        "subscribers": args.subscribers,
        "segment_renders_s": setup,
        "fill_all_s": fill_seconds,
        "bodies_per_s": args.subscribers / fill_seconds,
        "per_reader_us": ours * 1e6,
        "per_subscriber_compile_ms": baseline * 1e3,
        "speedup_x": baseline / ours,
        "avg_html_plus_text_kb": total_bytes / args.subscribers / 1024,
        "messages_per_s": messages_per_s,
    }
    print(f"40 stories, {args.subscribers:,} subscribers in {len(SEGMENTS)} topic segments, one core")
    print(f"  render each segment once (Jinja + MJML): {setup * 1e3:8.1f} ms")
    print(f"  fill HTML + text for every reader:       {fill_seconds:8.2f} s")
    print(f"  rendered bodies per second:              {figures['bodies_per_s']:8,.0f}")
    print(
        f"  compile MJML per subscriber:             {baseline * 1e3:8.3f} ms each "
        f"(~{baseline * args.subscribers:,.0f} s for all; sample of {args.baseline_sample})"
    )
    print(f"  speed-up over per-subscriber compile:    {figures['speedup_x']:8.0f}x")
    print(f"  Renderer.message (+ signed links, headers): {messages_per_s:8,.0f} messages/s")
    note = f"40 stories, {args.subscribers:,} readers, 2 topic segments, one core"
    for metric, unit, value in (
        ("rendered bodies per second", "msg/s", figures["bodies_per_s"]),
        ("speed-up vs an MJML compile per reader", "x", figures["speedup_x"]),
        ("MJML compile per reader (the baseline)", "ms", figures["per_subscriber_compile_ms"]),
        ("Renderer.message incl. signed links and headers", "msg/s", messages_per_s),
    ):
        line = {"benchmark": "render", "metric": metric, "value": round(value, 2), "unit": unit, "note": note}
        print("BENCH " + json.dumps(line))
    return figures


if __name__ == "__main__":
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    main()

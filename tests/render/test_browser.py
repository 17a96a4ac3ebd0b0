"""The rendered email in a real browser: no horizontal scrolling at 320, 375 and 700 px."""

import html
import re
import subprocess
from pathlib import Path

import jinja2

from digest.compose import Edition, TopicSection
from tests.render import samples
from tests.render.tools import require

WIDTHS = (320, 375, 700)

# Each width gets an iframe of exactly that width (headless Chromium will not make a window narrower
# than 500 px). The page writes, per frame, width:scrollWidth:clientWidth into the DOM that
# --dump-dom prints.
_PROBE = """<script>
window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('iframe').forEach(function (frame) {
    var root = frame.contentDocument.documentElement;
    out.push(frame.dataset.width + ':' + root.scrollWidth + ':' + root.clientWidth);
  });
  document.body.setAttribute('data-probe', out.join(' '));
});
</script>"""


def measure(email_html: str, workdir: Path) -> dict[int, tuple[int, int]]:
    """{frame width: (scrollWidth, clientWidth)} of `email_html` laid out in headless Chromium."""
    chromium = require("chromium")
    frames = "".join(
        f'<iframe data-width="{w}" style="display:block;border:0;width:{w}px;height:60000px" '
        f'srcdoc="{html.escape(email_html, quote=True)}"></iframe>'
        for w in WIDTHS
    )
    page = workdir / "probe.html"
    page.write_text(f"<!doctype html><html><body style='margin:0'>{frames}{_PROBE}</body></html>")
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            f"--user-data-dir={workdir / 'profile'}",
            "--window-size=800,900",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    probe = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert probe is not None, result.stderr[-2000:]
    sizes = {}
    for item in probe.group(1).split():
        width, scroll, client = (int(v) for v in item.split(":"))
        sizes[width] = (scroll, client)
    return sizes


def test_probe_detects_horizontal_scrolling(tmp_path: Path, env: jinja2.Environment) -> None:
    # The probe itself must be able to fail: a 600 px block overflows the two phone widths.
    html_body, _ = samples.fill(samples.render_sample(env))
    sizes = measure(html_body.replace("</body>", '<div style="width:600px">x</div></body>'), tmp_path)
    assert sizes[320][0] > 320
    assert sizes[375][0] > 375
    assert sizes[700] == (700, 700)


def test_digest_never_scrolls_sideways(tmp_path: Path, env: jinja2.Environment) -> None:
    # Forty stories, plus the feed text most likely to push a layout wide.
    unbreakable = "Supercalifragilistic" * 8
    tricky = (
        samples.story(101, title=f"A title with {unbreakable} in it"),
        samples.story(102, url="https://example.com/" + "very-long-path-segment-" * 12, sources=3),
        samples.story(103, summary="<pre>" + "x = 1; " * 60 + "</pre><p>https://example.com/" + "a" * 150),
    )
    big = samples.edition(40, topics=samples.TOPICS)
    sample = Edition(big.date, big.title, (TopicSection("Tricky", tricky), *big.topics))
    html_body, _ = samples.fill(samples.render_sample(env, sample))
    sizes = measure(html_body, tmp_path)
    assert sizes == {w: (w, w) for w in WIDTHS}

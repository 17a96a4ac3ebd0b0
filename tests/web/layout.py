"""Lay a served page out in headless Chromium at a given width: what runs past the screen, and a
full-page screenshot (issue 14: the landing and sign-up pages on a 375 px phone)."""

import base64
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.browser import Page, chromium

# Every visible element whose box leaves the viewport sideways (the honeypot field is hidden off
# screen on purpose), and how wide the document scrolls.
_PROBE = """((width) => {
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('[aria-hidden="true"]')) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.right > width + 0.5 || r.left < -0.5) {
      out.push({tag: el.tagName.toLowerCase(), cls: el.className, left: r.left, right: r.right});
    }
  }
  return {width, viewport: window.innerWidth, scroll: document.documentElement.scrollWidth,
          overflowing: out, height: document.documentElement.scrollHeight};
})"""


def probe(page: Page, width: int) -> dict[str, Any]:
    """What on the open page runs past `width` px (a phone widens its layout viewport to fit wide
    content, so the page's own innerWidth would hide the fault), and the page's sizes."""
    found: dict[str, Any] = page.evaluate(f"{_PROBE}({int(width)})")
    return found


def lay_out(
    url: str, width: int, shot: Path, workdir: Path, then: Callable[[Page], None] | None = None
) -> dict[str, Any]:
    """Open `url` `width` px wide (and do `then` on the page, like a person typing and clicking),
    save a full-page PNG to `shot` (and to $DIGEST_TEST_SCREENSHOTS when set, for a person to look
    at), and return the probe's findings."""
    with chromium(workdir) as browser:
        page = browser.page()
        page.emulate(width, 900, mobile=width < 600)
        page.open(url)
        if then is not None:
            then(page)
        found = probe(page, width)
        data = browser.call(
            "Page.captureScreenshot",
            page.session,
            format="png",
            clip={
                "x": 0,
                "y": 0,
                "width": max(width, found["scroll"]),
                "height": found["height"],
                "scale": 1,
            },
            captureBeyondViewport=True,
        )["data"]
    shot.write_bytes(base64.b64decode(data))
    keep = os.environ.get("DIGEST_TEST_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    return found

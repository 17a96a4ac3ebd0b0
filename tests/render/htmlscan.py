"""A tiny stdlib HTML scanner for structural assertions (tags, attributes, links, visible text)."""

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Page:
    """What a rendered HTML body holds."""

    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def all(self, name: str) -> list[dict[str, str]]:
        """Attributes of every `name` element, in order."""
        return [attrs for tag, attrs in self.tags if tag == name]

    @property
    def links(self) -> list[str]:
        """Every href, in order."""
        return [a["href"] for a in self.all("a") if "href" in a]

    @property
    def visible(self) -> str:
        """Text outside <style>, <title> and <head>, whitespace collapsed."""
        return " ".join(" ".join(self.text).split())


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.page.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("style", "title", "head"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title", "head"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.page.text.append(data)


def scan(html: str) -> Page:
    """Parse `html` into a Page."""
    scanner = _Scanner()
    scanner.feed(html)
    scanner.close()
    return scanner.page

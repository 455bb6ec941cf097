"""Check that every relative link of the Markdown documentation leads somewhere.

The README, the user guide in ``docs/`` and the other Markdown pages of the
repository link to each other and to files (examples, chart values, tests). A
link whose file was moved or renamed, or whose ``#anchor`` names a heading that
no longer exists, fails here: ``make lint`` runs it. Anchors are GitHub's: the
heading's text, lower-cased, without punctuation, spaces turned into hyphens
(the docs site, ``mkdocs.yml``, makes the same ones). Links inside code are
not links and are ignored; so are links with a scheme (``https:``, ``mailto:``).

Run: ``.venv/bin/python -m blacklist_devtools.doclinks``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

REPO_ROOT = Path(__file__).resolve().parents[2]
# The pages checked, relative to the repository root (globs).
PAGES = ("README.md", "CONTRIBUTING.md", "chart/README.md", "devtools/README.md", "docs/**/*.md")

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target), with an optional "title"; text may hold code spans.
_INLINE = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


@dataclass(frozen=True)
class Link:
    """A link of a page: where it is, what it says and where it points."""

    line: int
    start: int
    end: int
    text: str
    target: str


def prose_lines(markdown: str) -> Iterator[tuple[int, str]]:
    """Line number and text of every line outside fenced code, code spans blanked out."""
    fence: str | None = None
    for number, line in enumerate(markdown.splitlines(), start=1):
        if match := _FENCE.match(line):
            marker = match.group(1)
            if fence is None:
                fence = marker
            elif marker == fence:
                fence = None
            continue
        if fence is None:
            yield number, _CODE_SPAN.sub(lambda span: " " * len(span.group(0)), line)


def links(markdown: str) -> list[Link]:
    """Every inline link and reference definition outside code."""
    found: list[Link] = []
    original = markdown.splitlines()
    for number, line in prose_lines(markdown):
        for match in _INLINE.finditer(line):
            text = original[number - 1][match.start(2) : match.end(2)]
            found.append(Link(number, match.start(), match.end(), text, match.group(3)))
        if definition := _REFERENCE.match(line):
            found.append(Link(number, 0, definition.end(), "", definition.group(1)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: formatting and punctuation dropped, spaces hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts as its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    kept = "".join(char for char in text.lower() if char.isalnum() or char in "-_ ")
    return kept.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every anchor a page has: its headings' slugs (repeats numbered) and HTML anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    original = markdown.splitlines()
    for number, prose in prose_lines(markdown):
        found.update(_HTML_ANCHOR.findall(prose))
        if match := HEADING.match(original[number - 1]):
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def is_relative(target: str) -> bool:
    """Whether ``target`` is a link into the repository (no scheme, not empty)."""
    return bool(target) and not _SCHEME.match(target)


def problems(page: Path, root: Path) -> Iterator[str]:
    """What is wrong with the relative links of ``page``, one message each."""
    markdown = page.read_text()
    name = page.relative_to(root)
    for link in links(markdown):
        if not is_relative(link.target):
            continue
        path_part, _, anchor = link.target.partition("#")
        target = (page.parent / unquote(path_part)).resolve() if path_part else page
        where = f"{name}:{link.line}: {link.target}"
        if not target.is_relative_to(root):
            yield f"{where}: leaves the repository"
        elif not target.exists():
            yield f"{where}: no such file"
        elif anchor and target.suffix == ".md" and anchor not in anchors(target.read_text()):
            yield f"{where}: {target.relative_to(root)} has no heading with anchor #{anchor}"


def pages(root: Path, patterns: Iterable[str] = PAGES) -> list[Path]:
    """The Markdown pages checked, sorted."""
    return sorted({path for pattern in patterns for path in root.glob(pattern)})


def main(argv: list[str] | None = None, root: Path = REPO_ROOT) -> int:
    """Print every broken link of the pages; fail if there is one."""
    del argv
    found = [message for page in pages(root) for message in problems(page, root)]
    for message in found:
        print(message, file=sys.stderr)
    if found:
        print(f"{len(found)} broken link(s) in the documentation", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

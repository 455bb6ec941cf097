"""The docs site's one hook: links from docs/ to files outside it.

The pages of ``docs/`` are read on GitHub as much as on the built site, so they
link to the repository's other files (``../examples/production.yaml``,
``../chart/README.md``) by relative path, which works there. The site holds only
``docs/``, and ``mkdocs build --strict`` fails on a link it cannot resolve; so
before a page is rendered, each link to an existing file outside ``docs/``
becomes a link to that file in the repository when ``repo_url`` is configured,
and otherwise its bare text. A link to a file that does not exist is left as it
is, for the strict build (and ``blacklist_devtools.doclinks``) to report.

``mkdocs.yml`` names this file under ``hooks:``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

from blacklist_devtools.doclinks import is_relative, links


def outside_target(page_file: Path, docs_dir: Path, target: str) -> str | None:
    """The repository path of ``target`` if it is an existing file outside ``docs_dir``."""
    if not is_relative(target):
        return None
    path_part, _, _ = target.partition("#")
    if not path_part:
        return None
    resolved = (page_file.parent / unquote(path_part)).resolve()
    root = docs_dir.resolve().parent
    if resolved.is_relative_to(docs_dir.resolve()) or not resolved.is_relative_to(root):
        return None
    if not resolved.exists():
        return None
    return resolved.relative_to(root).as_posix()


def rewrite(markdown: str, page_file: Path, docs_dir: Path, repo_url: str | None) -> str:
    """``markdown`` with its links to files outside ``docs_dir`` made to work on the site."""
    lines = markdown.split("\n")
    for link in reversed(links(markdown)):
        path = outside_target(page_file, docs_dir, link.target)
        if path is None or not link.text:
            continue
        if repo_url:
            _, hash_mark, anchor = link.target.partition("#")
            url = f"{repo_url.rstrip('/')}/blob/HEAD/{path}{hash_mark}{anchor}"
            replacement = f"[{link.text}]({url})"
        else:
            replacement = link.text
        line = lines[link.line - 1]
        lines[link.line - 1] = line[: link.start] + replacement + line[link.end :]
    return "\n".join(lines)


def on_page_markdown(markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Mkdocs' hook: rewrite the page's links out of ``docs/`` before it is rendered."""
    del files
    source = page.file.abs_src_path
    if source is None:
        return markdown
    return rewrite(markdown, Path(source), Path(config.docs_dir), config.repo_url)

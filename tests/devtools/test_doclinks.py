"""The docs check finds broken links and anchors; the site's hook handles links out of docs/."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymdownx.slugs import slugify

from blacklist_devtools import doclinks, mkdocs_hooks

PAGE = """\
# Title

See [the guide](docs/guide.md#set-up), [`values`](chart/values.yaml) and
[the top](#title), not `[code](nowhere.md)`, nor <https://example.com>.

```bash
echo "[fenced](nowhere.md)"
```

[web]: https://example.com
[ref]: docs/missing.md
"""

GUIDE = """\
# Guide

## Set-up

## Set-up

## Autoscaling and `spec.replicas`
"""


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_links_outside_code_are_found_with_their_text() -> None:
    found = [(link.line, link.text, link.target) for link in doclinks.links(PAGE)]
    assert found == [
        (3, "the guide", "docs/guide.md#set-up"),
        (3, "`values`", "chart/values.yaml"),
        (4, "the top", "#title"),
        (10, "", "https://example.com"),
        (11, "", "docs/missing.md"),
    ]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Autoscaling and `spec.replicas`", "autoscaling-and-specreplicas"),
        ("Try it locally: `make demo`", "try-it-locally-make-demo"),
        ("The operator's own metrics", "the-operators-own-metrics"),
        (
            "hostPath volumes: what the cluster admin allows",
            "hostpath-volumes-what-the-cluster-admin-allows",
        ),
        ("Uses [a link](x.md) — and *more*", "uses-a-link--and-more"),
        ("blacklist_operator: how it is built", "blacklist_operator-how-it-is-built"),
    ],
)
def test_anchors_are_githubs(heading: str, anchor: str) -> None:
    assert doclinks.slug(heading) == anchor


def test_repeated_headings_are_numbered_and_fenced_ones_are_not_headings() -> None:
    assert doclinks.anchors(GUIDE + "```\n# not a heading\n```\n") == {
        "guide",
        "set-up",
        "set-up-1",
        "autoscaling-and-specreplicas",
    }


def test_the_site_makes_the_same_anchors_as_github() -> None:
    """mkdocs.yml's slugify (pymdownx, lower case) agrees on every heading of the guide."""
    site_slug = slugify(case="lower")
    for page in sorted((doclinks.REPO_ROOT / "docs").glob("*.md")):
        lines = page.read_text().splitlines()
        for number, _ in doclinks.prose_lines(page.read_text()):
            if match := doclinks.HEADING.match(lines[number - 1]):
                heading = match.group(2)
                # The toc extension slugs the heading's rendered text: code spans without backticks.
                rendered = heading.replace("`", "")
                assert site_slug(rendered, "-") == doclinks.slug(heading), (page.name, heading)


def test_broken_files_anchors_and_escapes_are_reported(tmp_path: Path) -> None:
    write(tmp_path, {"README.md": PAGE, "docs/guide.md": GUIDE, "chart/values.yaml": "a: 1\n"})
    assert list(doclinks.problems(tmp_path / "README.md", tmp_path)) == [
        "README.md:11: docs/missing.md: no such file"
    ]
    write(tmp_path, {"docs/guide.md": "# Guide\n", "docs/other.md": "[up](../../x.md)\n"})
    assert list(doclinks.problems(tmp_path / "README.md", tmp_path)) == [
        "README.md:3: docs/guide.md#set-up: docs/guide.md has no heading with anchor #set-up",
        "README.md:11: docs/missing.md: no such file",
    ]
    assert list(doclinks.problems(tmp_path / "docs/other.md", tmp_path)) == [
        "docs/other.md:1: ../../x.md: leaves the repository"
    ]


def test_main_fails_until_every_link_resolves(tmp_path: Path) -> None:
    write(tmp_path, {"README.md": PAGE, "docs/guide.md": GUIDE, "chart/values.yaml": "a: 1\n"})
    assert doclinks.main([], root=tmp_path) == 1
    write(tmp_path, {"docs/missing.md": "# Missing\n"})
    assert doclinks.main([], root=tmp_path) == 0


def test_the_repository_has_no_broken_links() -> None:
    root = doclinks.REPO_ROOT
    assert [
        message for page in doclinks.pages(root) for message in doclinks.problems(page, root)
    ] == []


def test_the_hook_turns_links_out_of_docs_into_text_or_repository_links(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "chart/README.md": "# Chart\n",
            "docs/other.md": "# Other\n",
            "docs/page.md": "",
        },
    )
    markdown = (
        "See [the chart](../chart/README.md#values), [other](other.md)\n"
        "and [gone](../chart/gone.md), `[code](../chart/README.md)`.\n"
    )
    page, docs = tmp_path / "docs/page.md", tmp_path / "docs"
    assert mkdocs_hooks.rewrite(markdown, page, docs, None) == (
        "See the chart, [other](other.md)\n"
        "and [gone](../chart/gone.md), `[code](../chart/README.md)`.\n"
    )
    assert mkdocs_hooks.rewrite(markdown, page, docs, "https://example.com/org/repo/") == (
        "See [the chart](https://example.com/org/repo/blob/HEAD/chart/README.md#values), "
        "[other](other.md)\nand [gone](../chart/gone.md), `[code](../chart/README.md)`.\n"
    )

"""The chart's values table in chart/README.md, generated from the comments of values.yaml.

Each value of ``chart/values.yaml`` is documented by the comment block above it,
which starts ``# <dotted.path> -- <description>`` (continued on the next comment
lines). The table lists every documented value that is not a parent of other
documented values, with its default from the YAML itself, between the markers
below. ``--check`` (run by ``make lint``) fails when the README is not what the
comments give; without it the README is rewritten.

Run: ``.venv/bin/python -m blacklist_devtools.values_table [--check]``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "chart"
START = "<!-- values-table:start (generated from values.yaml: make values-table) -->"
END = "<!-- values-table:end -->"
_DOC = re.compile(r"^\s*# ([A-Za-z0-9_.]+) -- (.*)$")
_MORE = re.compile(r"^\s*#\s?(.*)$")


def documented(values_text: str) -> dict[str, str]:
    """Every ``path -> description`` of the comment blocks, in file order."""
    docs: dict[str, str] = {}
    current: str | None = None
    for line in values_text.splitlines():
        if match := _DOC.match(line):
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif current is not None and (match := _MORE.match(line)) and match.group(1).strip():
            docs[current] += " " + match.group(1).strip()
        else:
            current = None
    return docs


def default_of(values: Any, path: str) -> Any:
    """The value at a dotted ``path`` of the parsed values."""
    for part in path.split("."):
        values = values[part]
    return values


def render_default(value: Any) -> str:
    """A default as the table shows it: compact, in backticks."""
    return f"`{json.dumps(value, separators=(', ', ': '))}`"


def table(values_text: str) -> str:
    """The Markdown table of the leaf values."""
    docs = documented(values_text)
    values = yaml.safe_load(values_text)
    rows = ["| value | meaning | default |", "|---|---|---|"]
    for path, description in docs.items():
        if any(other.startswith(f"{path}.") for other in docs):
            continue
        text = description.replace("|", "\\|")
        rows.append(f"| `{path}` | {text} | {render_default(default_of(values, path))} |")
    return "\n".join(rows)


def rewritten(readme: str, generated: str) -> str:
    """``readme`` with the text between the markers replaced by ``generated``."""
    before, found, rest = readme.partition(START)
    _, found_end, after = rest.partition(END)
    if not (found and found_end):
        raise ValueError(f"chart/README.md lacks the markers {START!r} and {END!r}")
    return f"{before}{START}\n{generated}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite chart/README.md's table, or with ``--check`` say whether it is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the table is stale")
    arguments = parser.parse_args(argv)
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    wanted = rewritten(readme, table((CHART / "values.yaml").read_text()))
    if wanted == readme:
        return 0
    if arguments.check:
        print(
            "chart/README.md's values table differs from chart/values.yaml's comments: "
            "run `make values-table`",
            file=sys.stderr,
        )
        return 1
    readme_path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())

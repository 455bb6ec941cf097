"""The field reference of docs/configuration.md, generated from the CRD's own schema.

The CRD (``chart/crd/blacklistservices.yaml``, the one source the chart installs
and ``crds/`` copies) describes every field of ``spec`` and ``status``: its
description, type, default, bounds, enum, pattern and CEL rules. This module
walks that schema and writes one table row per field, between the markers
below, so the reference cannot drift from what the API server enforces.
``--check`` (run by ``make lint``) fails when the page is not what the CRD gives;
without it the page is rewritten.

Run: ``.venv/bin/python -m blacklist_devtools.crd_reference [--check]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD = Path("chart/crd/blacklistservices.yaml")
PAGE = Path("docs/configuration.md")
START = "<!-- crd-reference:start (generated from the CRD: make crd-reference) -->"
END = "<!-- crd-reference:end -->"
# A pattern longer than this, or one a Markdown table cannot hold, is left to the CRD.
_PATTERN_SHOWN = 40


@dataclass(frozen=True)
class Field:
    """One field of the schema, at its dotted path (``[]`` marks the items of a list)."""

    path: str
    schema: Mapping[str, Any]
    rules: tuple[str, ...]


def _rules_by_field(schema: Mapping[str, Any]) -> dict[str, list[str]]:
    """The messages of an object's CEL rules, by the property they name (``""``: the object)."""
    found: dict[str, list[str]] = {}
    for rule in schema.get("x-kubernetes-validations", []):
        target = str(rule.get("fieldPath", "")).removeprefix(".")
        found.setdefault(target, []).append(str(rule.get("message", rule["rule"])))
    return found


def fields(schema: Mapping[str, Any], path: str, rules: tuple[str, ...] = ()) -> Iterator[Field]:
    """``schema`` at ``path`` and every field below it, depth first in file order."""
    own = _rules_by_field(schema)
    yield Field(path, schema, (*rules, *own.get("", [])))
    for name, child in schema.get("properties", {}).items():
        yield from fields(child, f"{path}.{name}", tuple(own.get(name, [])))
    items = schema.get("items")
    if items is not None:
        yield from fields(items, f"{path}[]")


def kind_of(schema: Mapping[str, Any]) -> str:
    """The field's type as the table shows it."""
    kind = str(schema.get("type", "object"))
    if kind == "array":
        return f"list of {schema.get('items', {}).get('type', 'object')}"
    return kind


def _code(text: str) -> str:
    return f"`{text}`"


def _pattern(pattern: str) -> str:
    if len(pattern) > _PATTERN_SHOWN or "|" in pattern or "`" in pattern:
        return "a pattern (in the CRD)"
    return f"pattern {_code(pattern)}"


def validation_of(field: Field) -> str:
    """Bounds, choices, pattern and CEL rules of a field, in words."""
    schema = field.schema
    parts: list[str] = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(_code(str(choice)) for choice in schema["enum"]))
    if "minimum" in schema and "maximum" in schema:
        parts.append(f"from {schema['minimum']} to {schema['maximum']}")
    elif "minimum" in schema:
        parts.append(f"≥ {schema['minimum']}")
    elif "maximum" in schema:
        parts.append(f"≤ {schema['maximum']}")
    if schema.get("minLength") == 1:
        parts.append("non-empty")
    elif "minLength" in schema:
        parts.append(f"at least {schema['minLength']} characters")
    if "maxLength" in schema:
        parts.append(f"at most {schema['maxLength']} characters")
    if "maxItems" in schema:
        parts.append(f"at most {schema['maxItems']} entries")
    if "pattern" in schema:
        parts.append(_pattern(str(schema["pattern"])))
    if "required" in schema:
        parts.append("requires " + ", ".join(_code(str(name)) for name in schema["required"]))
    parts.extend(field.rules)
    return "; ".join(parts)


def default_of(schema: Mapping[str, Any]) -> str:
    """The default the API server fills in, compact, or a dash."""
    if "default" not in schema:
        return "—"
    return _code(json.dumps(schema["default"], separators=(", ", ": ")))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(fields_: Iterator[Field], with_defaults: bool) -> str:
    """A Markdown table of ``fields_``."""
    if with_defaults:
        rows = ["| field | type | default | description | validation |", "|---|---|---|---|---|"]
    else:
        rows = ["| field | type | description |", "|---|---|---|"]
    for field in fields_:
        cells = [_code(field.path), kind_of(field.schema)]
        if with_defaults:
            cells.append(default_of(field.schema))
        cells.append(_cell(str(field.schema.get("description", ""))))
        if with_defaults:
            cells.append(_cell(validation_of(field)))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def reference(crd_text: str) -> str:
    """The generated reference: the spec's fields, then the status's."""
    crd = yaml.safe_load(crd_text)
    (version,) = crd["spec"]["versions"]
    root = version["schema"]["openAPIV3Schema"]["properties"]
    spec = table(fields(root["spec"], "spec"), with_defaults=True)
    status = table(fields(root["status"], "status"), with_defaults=False)
    return f"#### `spec`\n\n{spec}\n\n#### `status` (written by the operator)\n\n{status}"


def rewritten(page: str, generated: str) -> str:
    """``page`` with the text between the markers replaced by ``generated``."""
    before, found, rest = page.partition(START)
    _, found_end, after = rest.partition(END)
    if not (found and found_end):
        raise ValueError(f"{PAGE} lacks the markers {START!r} and {END!r}")
    return f"{before}{START}\n\n{generated}\n\n{END}{after}"


def main(argv: list[str] | None = None, root: Path = REPO_ROOT) -> int:
    """Rewrite the reference, or with ``--check`` say whether it is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the reference is stale")
    arguments = parser.parse_args(argv)
    page_path = root / PAGE
    page = page_path.read_text()
    wanted = rewritten(page, reference((root / CRD).read_text()))
    if wanted == page:
        return 0
    if arguments.check:
        print(f"{PAGE}'s reference differs from {CRD}: run `make crd-reference`", file=sys.stderr)
        return 1
    page_path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())

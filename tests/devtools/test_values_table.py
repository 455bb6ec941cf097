"""The chart's values table comes from values.yaml's comments, and a stale one is caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from blacklist_devtools import values_table

VALUES = """\
# image -- the image.
image:
  # image.tag -- its tag; empty means the chart's appVersion. A | pipe
  # continues here.
  tag: ""
# replicaCount -- replicas.
replicaCount: 1
undocumented: true
"""


def test_leaves_are_listed_with_their_defaults_and_parents_are_not() -> None:
    table = values_table.table(VALUES)
    assert table.splitlines()[2:] == [
        "| `image.tag` | its tag; empty means the chart's appVersion. A \\| pipe continues here."
        ' | `""` |',
        "| `replicaCount` | replicas. | `1` |",
    ]


def test_the_chart_readme_is_current() -> None:
    readme = (values_table.CHART / "README.md").read_text()
    generated = values_table.table((values_table.CHART / "values.yaml").read_text())
    assert values_table.rewritten(readme, generated) == readme, "run `make values-table`"


def test_check_fails_on_a_stale_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "values.yaml").write_text(VALUES)
    (tmp_path / "README.md").write_text(f"# chart\n{values_table.START}\n{values_table.END}\n")
    monkeypatch.setattr(values_table, "CHART", tmp_path)
    assert values_table.main(["--check"]) == 1
    assert values_table.main([]) == 0
    assert values_table.main(["--check"]) == 0
    assert "`replicaCount`" in (tmp_path / "README.md").read_text()

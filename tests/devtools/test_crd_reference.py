"""The field reference of docs/configuration.md comes from the CRD, and a stale one is caught."""

from __future__ import annotations

from pathlib import Path

from blacklist_devtools import crd_reference

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec:
  versions:
    - name: v1
      schema:
        openAPIV3Schema:
          properties:
            spec:
              type: object
              description: The desired state.
              x-kubernetes-validations:
                - rule: self.port != 9090
                  fieldPath: .port
                  message: spec.port cannot be 9090
              properties:
                port:
                  type: integer
                  description: The port | of the service.
                  default: 5004
                  minimum: 1
                  maximum: 65535
                proxies:
                  type: array
                  default: []
                  maxItems: 64
                  items:
                    type: string
                    description: An IP address.
                    pattern: '^[0-9.]+$'
                mode:
                  type: string
                  enum: [a, b]
            status:
              type: object
              description: Observed.
              properties:
                count:
                  type: integer
                  description: How many.
"""


def test_every_field_has_a_row_with_its_type_default_and_checks() -> None:
    rows = crd_reference.reference(CRD).splitlines()
    assert (
        "| `spec.port` | integer | `5004` | The port \\| of the service. | from 1 to 65535; "
        "spec.port cannot be 9090 |"
    ) in rows
    assert "| `spec.proxies` | list of string | `[]` |  | at most 64 entries |" in rows
    assert "| `spec.proxies[]` | string | — | An IP address. | pattern `^[0-9.]+$` |" in rows
    assert "| `spec.mode` | string | — |  | one of `a`, `b` |" in rows
    assert "| `status.count` | integer | How many. |" in rows
    # The rule that names .port is the port's, not the object's.
    assert "| `spec` | object | — | The desired state. |  |" in rows


def test_the_configuration_page_is_current() -> None:
    root = crd_reference.REPO_ROOT
    page = (root / crd_reference.PAGE).read_text()
    generated = crd_reference.reference((root / crd_reference.CRD).read_text())
    assert crd_reference.rewritten(page, generated) == page, "run `make crd-reference`"


def test_check_fails_on_a_stale_reference_and_the_rewrite_mends_it(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / crd_reference.CRD).parent.mkdir(parents=True)
    (tmp_path / crd_reference.CRD).write_text(CRD)
    page = tmp_path / crd_reference.PAGE
    page.write_text(f"# Configuration\n{crd_reference.START}\nold\n{crd_reference.END}\nafter\n")
    assert crd_reference.main(["--check"], root=tmp_path) == 1
    assert crd_reference.main([], root=tmp_path) == 0
    assert crd_reference.main(["--check"], root=tmp_path) == 0
    text = page.read_text()
    assert "`spec.port`" in text
    assert "old" not in text
    assert text.endswith(f"{crd_reference.END}\nafter\n")


def test_the_real_crd_documents_every_spec_field() -> None:
    crd = (crd_reference.REPO_ROOT / crd_reference.CRD).read_text()
    reference = crd_reference.reference(crd)
    rows = [row for row in reference.splitlines() if row.startswith("| `spec")]
    undocumented = [row for row in rows if row.split(" | ")[3].strip() == ""]
    assert len(rows) > 50
    assert undocumented == []

"""The pure parts of ``make release``: versions, the CHANGELOG check, the chart's edits, labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blacklist_devtools.release_metadata import (
    ReleaseError,
    changelog_has_section,
    check_version,
    install_command,
    labelled_containerfile,
    oci_labels,
    plain_http,
    release_chart_yaml,
    release_values_yaml,
    set_scalar,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("version", ["0.1.0", "1.22.333", "0.2.0-rc.1", "0.0.0-test.a1b2c3"])
def test_semantic_versions_are_accepted(version: str) -> None:
    assert check_version(version) == version


@pytest.mark.parametrize(
    "version", ["1.0", "v1.0.0", "01.0.0", "1.0.0-", "1.0.0-01", "1.0.0 ", "latest", ""]
)
def test_other_versions_are_refused(version: str) -> None:
    with pytest.raises(ReleaseError, match="not a semantic version"):
        check_version(version)


def test_build_metadata_is_refused_because_a_tag_cannot_hold_it() -> None:
    with pytest.raises(ReleaseError, match="image tag"):
        check_version("1.0.0+build.5")


def test_the_changelog_needs_the_versions_own_section() -> None:
    changelog = "# Changelog\n\n## [Unreleased]\n\n## [0.2.0] - 2026-12-01\n- x\n\n## [0.1.0]\n"
    assert changelog_has_section(changelog, "0.2.0")
    assert changelog_has_section(changelog, "0.1.0")
    assert not changelog_has_section(changelog, "0.2")
    assert not changelog_has_section(changelog, "0.3.0")
    assert not changelog_has_section("see ## [0.3.0] below\n", "0.3.0")


def test_the_release_chart_yaml_carries_the_version_twice_and_nothing_else_changes() -> None:
    original = (REPO_ROOT / "chart" / "Chart.yaml").read_text()
    edited = release_chart_yaml(original, "1.2.3-rc.1")
    before, after = yaml.safe_load(original), yaml.safe_load(edited)
    assert after["version"] == after["appVersion"] == "1.2.3-rc.1"
    assert {**before, "version": "1.2.3-rc.1", "appVersion": "1.2.3-rc.1"} == after
    changed = [line for line in edited.splitlines() if line not in original.splitlines()]
    assert changed == ['version: "1.2.3-rc.1"', 'appVersion: "1.2.3-rc.1"']


def test_the_release_values_name_both_images_by_digest_and_keep_every_comment() -> None:
    original = (REPO_ROOT / "chart" / "values.yaml").read_text()
    service = f"registry.example:5000/flask-blacklist-svc:1.2.3@{DIGEST}"
    edited = release_values_yaml(
        original, "registry.example:5000/blacklist-operator", DIGEST, service
    )
    values = yaml.safe_load(edited)
    assert values["image"]["repository"] == "registry.example:5000/blacklist-operator"
    assert values["image"]["digest"] == DIGEST
    assert values["defaults"]["serviceImage"] == service
    assert (
        values["defaults"]["databaseImage"] == yaml.safe_load(original)["defaults"]["databaseImage"]
    )
    comments = [line for line in original.splitlines() if line.lstrip().startswith("#")]
    assert comments == [line for line in edited.splitlines() if line.lstrip().startswith("#")]
    assert len(edited.splitlines()) == len(original.splitlines())


def test_a_key_of_the_same_name_elsewhere_is_left_alone() -> None:
    text = "image:\n  tag: a\nsidecar:\n  image:\n    tag: b\n"
    assert yaml.safe_load(set_scalar(text, ["image", "tag"], "c")) == {
        "image": {"tag": "c"},
        "sidecar": {"image": {"tag": "b"}},
    }
    assert yaml.safe_load(set_scalar(text, ["sidecar", "image", "tag"], "d"))["sidecar"] == {
        "image": {"tag": "d"}
    }


def test_keys_inside_a_block_scalar_are_text_not_keys() -> None:
    text = "notes: |\n  version: 1\nversion: 0.1.0\n"
    assert set_scalar(text, ["version"], "2.0.0") == 'notes: |\n  version: 1\nversion: "2.0.0"\n'


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("image:\n  repository: x\n", ["image"], "not a plain scalar"),
        ("image:\n  repository: x\n", ["image", "digest"], "found 0"),
        ("version: 1 # the version\n", ["version"], "not a plain scalar"),
    ],
)
def test_what_is_not_one_plain_scalar_is_refused(text: str, path: list[str], message: str) -> None:
    with pytest.raises(ReleaseError, match=message):
        set_scalar(text, path, "v")


def test_the_containerfile_only_adds_labels() -> None:
    labels = oci_labels("1.2.3", "0" * 40, "https://example.org/blacklist-operator")
    assert labelled_containerfile("abc123", labels) == (
        "FROM abc123\n"
        'LABEL org.opencontainers.image.version="1.2.3" \\\n'
        f'      org.opencontainers.image.revision="{"0" * 40}" \\\n'
        '      org.opencontainers.image.source="https://example.org/blacklist-operator"\n'
    )


@pytest.mark.parametrize("source", ["https://x/$HOME", 'https://x/"', "https://x/ y"])
def test_a_label_that_the_containerfile_would_reinterpret_is_refused(source: str) -> None:
    with pytest.raises(ReleaseError, match="label"):
        labelled_containerfile("abc", oci_labels("1.0.0", "0" * 40, source))


@pytest.mark.parametrize(
    ("registry", "plain"),
    [
        ("localhost:5050", True),
        ("127.0.0.1:5000/team", True),
        ("[::1]:5000", True),
        ("localhost", True),
        ("registry.example.com", False),
        ("registry.example.com:5000/localhost", False),
        ("localhost.example.com:5050", False),
    ],
)
def test_only_a_registry_on_the_loopback_is_spoken_to_in_plain_http(
    registry: str, plain: bool
) -> None:
    assert plain_http(registry) is plain
    assert (
        install_command(registry, "1.0.0", plain_http(registry)).endswith(" --plain-http") is plain
    )

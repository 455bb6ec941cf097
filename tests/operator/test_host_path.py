"""hostPath storage: only under the admin's prefixes, one PV per resource, owned (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from blacklist_operator.builders import build_database_deployment, build_persistent_volume
from blacklist_operator.builders.naming import persistent_volume_name, volume_belongs_to
from blacklist_operator.model import (
    BlacklistService,
    SpecError,
    check_host_path,
    host_path_allowed,
    parse,
)


def make(name: str = "demo", namespace: str = "team", **spec: Any) -> BlacklistService:
    return parse(
        {
            "metadata": {"name": name, "namespace": namespace, "uid": "u", "generation": 1},
            "spec": spec,
        }
    )


@pytest.mark.parametrize(
    ("path", "prefixes", "allowed"),
    [
        ("/data/pg", ["/data"], True),
        ("/data", ["/data"], True),
        ("/data/pg", ["/data/"], True),
        ("/data//pg/", ["/data"], True),
        ("/database", ["/data"], False),
        ("/data-other/pg", ["/data"], False),
        ("/etc/kubernetes", ["/data"], False),
        ("/", ["/data"], False),
        ("/data/pg", [], False),
        ("/srv/x", ["/data", "/srv"], True),
        ("/data/../etc", ["/data"], False),
        ("/anything", ["/"], True),
        ("/data/pg", ["relative"], False),
    ],
)
def test_prefixes_match_whole_path_components(
    path: str, prefixes: list[str], allowed: bool
) -> None:
    assert host_path_allowed(path, prefixes) is allowed


def test_a_refused_host_path_names_the_field_and_the_prefixes() -> None:
    bls = make(database={"storage": {"hostPath": "/etc/kubernetes"}})
    with pytest.raises(SpecError, match="allows no hostPath") as refused:
        check_host_path(bls, [])
    assert refused.value.field_path == "spec.database.storage.hostPath"
    with pytest.raises(SpecError, match=r"/data, /srv"):
        check_host_path(bls, ["/data", "/srv"])
    check_host_path(make(), [])  # No hostPath: nothing to allow.
    check_host_path(make(database={"storage": {"hostPath": "/data/pg"}}), ["/data"])


def test_volume_names_never_collide_and_fit_a_label() -> None:
    first = persistent_volume_name(make("db", "team-a"))
    second = persistent_volume_name(make("a-db", "team"))
    assert first != second
    long = persistent_volume_name(make("n" * 253, "s" * 63))
    assert len(long) <= 63
    assert long == persistent_volume_name(make("n" * 253, "s" * 63))


def test_a_volume_belongs_to_its_resource_only() -> None:
    mine = make("db", "team-a", database={"storage": {"hostPath": "/data/a"}})
    other = make("a-db", "team", database={"storage": {"hostPath": "/data/b"}})
    volume = build_persistent_volume(mine)
    assert volume is not None
    assert volume_belongs_to(volume, mine)
    assert not volume_belongs_to(volume, other)
    assert not volume_belongs_to({"metadata": {"name": "x"}}, mine)


def test_only_a_host_path_database_gets_the_chown_init_container() -> None:
    with_host_path = build_database_deployment(make(database={"storage": {"hostPath": "/data/a"}}))
    names = [c["name"] for c in with_host_path["spec"]["template"]["spec"]["initContainers"]]
    assert names == ["own-data", "set-password"]
    without = build_database_deployment(make())
    assert [c["name"] for c in without["spec"]["template"]["spec"]["initContainers"]] == [
        "set-password"
    ]

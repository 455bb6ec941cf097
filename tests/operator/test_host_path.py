"""hostPath storage: only under the admin's prefixes, one PV per resource, owned (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from blacklist_operator.__main__ import main
from blacklist_operator.builders import build_database_deployment, build_persistent_volume
from blacklist_operator.builders.naming import persistent_volume_name, volume_belongs_to
from blacklist_operator.model.resource import (
    BlacklistService,
    SpecError,
    check_host_path,
    host_path_allowed,
    host_path_directory,
    parse,
    place_host_path,
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


def test_the_root_init_container_runs_the_admins_image_never_the_tenants() -> None:
    tenant = make(database={"image": "evil/postgres:1", "storage": {"hostPath": "/data/a"}})
    deployment = build_database_deployment(tenant, None, "registry.example/blacklist-operator:v1")
    own_data, set_password = deployment["spec"]["template"]["spec"]["initContainers"]
    assert own_data["name"] == "own-data"
    assert own_data["image"] == "registry.example/blacklist-operator:v1"
    assert own_data["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    # The tenant's image runs only as PostgreSQL's uid, never as root.
    assert set_password["image"] == "evil/postgres:1"
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 999
    assert set_password.get("securityContext", {}).get("runAsUser", 999) != 0


def test_the_operator_chooses_one_directory_per_resource() -> None:
    prefixes = ["/data"]
    # Two resources naming one directory, and one naming the prefix itself.
    first = make("db", "team-a", database={"storage": {"hostPath": "/data/shared"}})
    second = make("db", "team-b", database={"storage": {"hostPath": "/data/shared"}})
    greedy = make("all", "team-c", database={"storage": {"hostPath": "/data"}})
    assert host_path_directory(first, prefixes) == "/data/team-a/db"
    assert host_path_directory(second, prefixes) == "/data/team-b/db"
    assert host_path_directory(greedy, prefixes) == "/data/team-c/all"
    # Namespace and name are one level each: NS "db" / N "team-a" is not team-a/db.
    swapped = make("team-a", "db", database={"storage": {"hostPath": "/data"}})
    assert host_path_directory(swapped, prefixes) == "/data/db/team-a"


def test_the_path_only_picks_among_the_allowed_prefixes() -> None:
    prefixes = ["/mnt/fast/", "/mnt/slow"]
    fast = make("db", "team", database={"storage": {"hostPath": "/mnt/fast//anything"}})
    slow = make("db", "team", database={"storage": {"hostPath": "/mnt/slow"}})
    assert host_path_directory(fast, prefixes) == "/mnt/fast/team/db"
    assert host_path_directory(slow, prefixes) == "/mnt/slow/team/db"
    with pytest.raises(SpecError, match="not under an allowed prefix"):
        host_path_directory(make(database={"storage": {"hostPath": "/etc"}}), prefixes)


def test_the_volume_is_built_on_the_chosen_directory_or_the_one_it_has() -> None:
    bls = make("db", "team", database={"storage": {"hostPath": "/data/pg"}})
    placed = place_host_path(bls, ["/data"])
    volume = build_persistent_volume(placed)
    assert volume is not None
    assert volume["spec"]["hostPath"]["path"] == "/data/team/db"
    # A PV made before this naming keeps its path: a PV's source is immutable.
    kept = place_host_path(bls, ["/data"], kept="/data/pg")
    assert kept.spec.database.storage.host_path == "/data/pg"
    assert place_host_path(make(), ["/data"]) == make()


def test_nested_prefixes_stop_the_operator() -> None:
    with pytest.raises(SystemExit, match="inside another allowed prefix"):
        main(["--allowed-host-path-prefix=/data", "--allowed-host-path-prefix=/data/fast"])

"""Loader behaviour operators rely on (policy-spec.md): merging, YAML quirks,
address sets, rule ids, defaults."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from zonewall.policy.errors import PolicyError
from zonewall.policy.loader import load_policy, load_policy_text

HOSTS = """\
hosts:
  node1: {address: 192.168.100.11, uplink: eth0}
networks:
  prod: {bridge: vmbr1, subnets: [10.0.2.0/24, "fd00:2::/64"]}
"""


def dd(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return directory


def load(text: str, name: str = "policy.yaml"):  # type: ignore[no-untyped-def]
    return load_policy_text(textwrap.dedent(text).lstrip("\n"), name)


def rejected(text: str, name: str = "policy.yaml") -> list[str]:
    with pytest.raises(PolicyError) as info:
        load(text, name)
    return [str(p) for p in info.value.problems]


# -- a directory of files ----------------------------------------------------------


def test_directory_merges_maps_and_concatenates_rules_in_file_order(tmp_path: Path) -> None:
    write(tmp_path, {
        "20-vms.yaml": """
            vms:
              web1:
                host: node1
                zone: dmz
                nics: [{network: prod, ips: [10.0.2.10]}]
            global_rules:
              - {id: third, direction: in, action: accept, service: http}
            """,
        "10-zones.yml": """
            zones:
              dmz: {default: {in: drop}}
            global_rules:
              - {id: second, direction: in, action: accept, service: https}
            vms:
              web2:
                host: node1
                nics: [{network: prod, ips: [10.0.2.11]}]
            """,
        "00-base.yaml": "version: 1\n" + HOSTS + dd("""
            global_rules:
              - {id: first, direction: in, action: accept, service: ssh}
            """),
        "notes.txt": "not a policy file: ignored",
    })
    policy = load_policy(tmp_path)
    assert sorted(policy.doc.vms) == ["web1", "web2"]
    assert sorted(policy.doc.zones) == ["dmz"]
    assert [ref.id for ref in policy.rules_of("global")] == ["first", "second", "third"]
    assert policy.doc.vms["web1"].zone == "dmz"


def test_subdirectories_are_part_of_the_policy(tmp_path: Path) -> None:
    write(tmp_path, {
        "base.yaml": "version: 1\n" + HOSTS,
        "tenants/acme/vms.yaml": """
            vms:
              acme1:
                host: node1
                nics: [{network: prod}]
              """,
    })
    assert list(load_policy(tmp_path).doc.vms) == ["acme1"]


def test_a_name_defined_twice_names_both_places(tmp_path: Path) -> None:
    write(tmp_path, {
        "a.yaml": "version: 1\n" + HOSTS + dd("""
            groups:
              admins: [10.0.0.0/8]
            """),
        "b.yaml": """
            groups:
              ops: [10.1.0.0/16]
              admins: [10.2.0.0/16]
            """,
    })
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert [str(p) for p in info.value.problems] == ["b.yaml:3:3: groups.admins: defined twice: also at a.yaml:7:3"]


def test_errors_in_several_files_are_all_reported(tmp_path: Path) -> None:
    write(tmp_path, {
        "a.yaml": "version: 1\nhosts: {node1: {address: 10.0.0.300}}\n",
        "b.yaml": "zones: {dmz: {defualt: {in: drop}}}\n",
    })
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert [(p.loc.file, p.key) for p in info.value.problems] == [
        ("a.yaml", "hosts.node1.address[0]"),
        ("b.yaml", "zones.dmz.defualt"),
    ]


def test_version_1_in_several_files_is_fine(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": "version: 1\n" + HOSTS, "b.yaml": "version: 1\nzones: {dmz: {}}\n"})
    assert list(load_policy(tmp_path).doc.zones) == ["dmz"]


def test_settings_merge_across_files(tmp_path: Path) -> None:
    """`settings` is a map like the others: its keys may live in different files."""
    write(tmp_path, {
        "a.yaml": "version: 1\nsettings:\n  default: {in: reject}\n",
        "b.yaml": "settings:\n  log: {denied: true}\n  management: [192.168.100.0/24]\n",
    })
    settings = load_policy(tmp_path).doc.settings
    assert settings.default.in_ == "reject"
    assert settings.log.denied is True
    assert settings.management == ["192.168.100.0/24"]


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no \\*.yaml or \\*.yml files"):
        load_policy(tmp_path)


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such file or directory"):
        load_policy(tmp_path / "nope.yaml")


def test_empty_file_is_an_empty_document(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": "version: 1\n" + HOSTS, "empty.yaml": "# nothing yet\n"})
    assert list(load_policy(tmp_path).doc.hosts) == ["node1"]


# -- YAML quirks -------------------------------------------------------------------


def test_unquoted_mac_stays_a_string() -> None:
    """YAML 1.1 would read 52:54:00:00:01:01 as a base-60 integer."""
    policy = load("version: 1\n" + HOSTS + dd("""
        vms:
          web1:
            host: node1
            nics:
              - {network: prod, mac: 52:54:00:00:01:01}
              - network: prod
                mac: 52:54:00:AB:01:02
        """))
    nics = policy.doc.vms["web1"].nics
    assert [nic.mac for nic in nics] == ["52:54:00:00:01:01", "52:54:00:ab:01:02"]


def test_unquoted_times_and_sexagesimal_values_stay_strings() -> None:
    policy = load("version: 1\n" + dd("""
        schedules:
          night: {days: [sat], time: 02:00-04:00}
        """))
    assert policy.doc.schedules["night"].time == "02:00-04:00"
    rejected_lines = rejected("version: 1\nschedules: {night: {time: 02:00}}\n")
    assert rejected_lines == ["policy.yaml:2:27: schedules.night.time: '02:00' is not a time window (expected HH:MM-HH:MM, e.g. 08:00-18:00)"]


def test_anchors_and_aliases_work() -> None:
    policy = load("version: 1\n" + HOSTS + dd("""
        groups:
          admins: &admins [192.168.100.0/24]
        global_rules:
          - {direction: in, action: accept, from: *admins, service: ssh}
        """))
    assert policy.rules_of("global")[0].rule.from_ == ["192.168.100.0/24"]


def test_alias_bombs_are_refused_quickly() -> None:
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    problems = rejected("\n".join(lines) + "\n")
    assert any("aliases (*) expand to more than" in line for line in problems)


# -- groups and address sets -------------------------------------------------------


def test_groups_as_list_mapping_or_single_value() -> None:
    policy = load("version: 1\n" + dd("""
        groups:
          as-list: [10.0.0.0/8, "fd00::/8"]
          as-mapping:
            members: [10.1.0.0/16]
            comment: ops
          single: 10.2.0.0/16
          nested: {members: [group:as-list, group:as-mapping]}
        """))
    groups = policy.doc.groups
    assert groups["as-list"].members == ["10.0.0.0/8", "fd00::/8"]
    assert groups["as-mapping"].members == ["10.1.0.0/16"]
    assert groups["as-mapping"].comment == "ops"
    assert groups["single"].members == ["10.2.0.0/16"]
    nested = policy.address_set(["group:nested"])
    assert nested.cidrs("ipv4") == ["10.0.0.0/8"]  # 10.1/16 is inside 10/8
    assert nested.cidrs("ipv6") == ["fd00::/8"]


def test_exclusions_resolve_exactly() -> None:
    policy = load("version: 1\n" + HOSTS + dd("""
        groups:
          admins: [10.0.0.0/8, "!10.0.9.0/24", "fd00::/16", "!fd00:1::/32"]
          but-admins: ["!group:admins"]
        vms:
          web1:
            host: node1
            nics: [{network: prod, ips: [10.0.2.10, "fd00:2::10"]}]
        """))
    assert policy.address_set(["10.0.0.0/8", "!10.0.9.0/24"]).cidrs("ipv4") == [
        "10.0.0.0/21", "10.0.8.0/24", "10.0.10.0/23", "10.0.12.0/22", "10.0.16.0/20",
        "10.0.32.0/19", "10.0.64.0/18", "10.0.128.0/17", "10.1.0.0/16", "10.2.0.0/15",
        "10.4.0.0/14", "10.8.0.0/13", "10.16.0.0/12", "10.32.0.0/11", "10.64.0.0/10",
        "10.128.0.0/9",
    ]
    admins = policy.address_set(["group:admins"])
    assert not admins.contains("10.0.9.1") and admins.contains("10.0.8.255") and admins.contains("10.0.10.0")
    assert admins.cidrs("ipv6") == ["fd00::/32"] + [f"fd00:{1 << n:x}::/{32 - n}" for n in range(1, 16)]
    # a list of only exclusions means "anything but"
    everything_else = policy.address_set(["!group:admins"])
    assert everything_else.contains("10.0.9.1") and everything_else.contains("192.0.2.1")
    assert not everything_else.contains("10.1.2.3")
    assert policy.address_set(["group:but-admins"]) == everything_else
    # exclusions apply after every inclusion, whatever their order in the list
    assert policy.address_set(["!10.0.2.10", "network:prod"]).cidrs("ipv4") == policy.address_set(
        ["network:prod", "!vm:web1"]
    ).cidrs("ipv4")
    assert policy.address_set(["network:prod", "!vm:web1"]).cidrs("ipv6")[:2] == ["fd00:2::/124", "fd00:2::11"]
    # a range
    assert policy.address_set(["10.0.1.10-10.0.1.20"]).cidrs("ipv4") == ["10.0.1.10/31", "10.0.1.12/30", "10.0.1.16/30", "10.0.1.20"]


# -- rule ids ------------------------------------------------------------------------


def test_default_rule_ids_are_file_stem_and_line(tmp_path: Path) -> None:
    write(tmp_path, {
        "00-base.yaml": "version: 1\n" + HOSTS,
        "zones/web.yaml": """
            zones:
              dmz:
                rules:
                  - direction: in
                    action: accept
                    service: https
                  - {id: explicit-id, direction: in, action: accept, service: http}
                  - {direction: in, action: accept, service: ssh}
            global_rules: [{direction: in, action: drop, tcp: 23}, {direction: in, action: drop, tcp: 25}]
            """,
    })
    policy = load_policy(tmp_path)
    assert [ref.id for ref in policy.rules_of("zone", "dmz")] == ["web:4", "explicit-id", "web:8"]
    # two rules on one line: the column tells them apart
    assert [ref.id for ref in policy.rules_of("global")] == ["web:9:16", "web:9:56"]
    assert policy.rule_by_id("web:8").rule.service == ["ssh"]


def test_rule_ids_from_a_single_file() -> None:
    policy = load("version: 1\nglobal_rules:\n  - {direction: in, action: accept, service: ssh}\n", "site.yaml")
    assert [ref.id for ref in policy.rules] == ["site:3"]


# -- defaults ---------------------------------------------------------------------


def test_vm_default_falls_back_to_zone_then_settings_per_direction() -> None:
    def vm(name: str, extra: str = "") -> str:
        return f"  {name}:\n    host: node1\n{extra}    nics: [{{network: prod}}]\n"

    policy = load("version: 1\n" + HOSTS + dd("""
        settings:
          default: {in: reject, out: accept}
        zones:
          strict: {default: {in: drop, out: drop}}
          half: {default: {out: reject}}
          none: {}
        """) + "vms:\n"
        + vm("own", "    zone: strict\n    default: {in: accept}\n")
        + vm("zoned", "    zone: strict\n")
        + vm("half", "    zone: half\n")
        + vm("nozone-default", "    zone: none\n")
        + vm("nozone")
        + vm("own-only-out", "    default: {out: drop}\n"))
    actions = {name: (policy.default_action(name, "in"), policy.default_action(name, "out")) for name in policy.doc.vms}
    assert actions == {
        "own": ("accept", "drop"),  # in from the VM, out from its zone
        "zoned": ("drop", "drop"),
        "half": ("reject", "reject"),  # in from settings, out from the zone
        "nozone-default": ("reject", "accept"),
        "nozone": ("reject", "accept"),
        "own-only-out": ("reject", "drop"),
    }


def test_settings_default_when_nothing_is_set() -> None:
    policy = load("version: 1\n" + HOSTS + "vms:\n  web1: {host: node1, nics: [{network: prod}]}\n")
    assert (policy.default_action("web1", "in"), policy.default_action("web1", "out")) == ("drop", "accept")


def test_management_may_be_empty() -> None:
    for value in ("[]", "", "null"):
        assert load(f"version: 1\nsettings: {{management: {value}}}\n").doc.settings.management == []


# -- positions of problems ---------------------------------------------------------


def test_problems_are_sorted_and_all_reported() -> None:
    problems = rejected("version: 1\n" + HOSTS + dd("""
        vms:
          web1:
            host: node9
            zone: nope
            nics: [{network: prod, ips: [10.9.9.9]}]
        """))
    assert problems == [
        "policy.yaml:8:11: vms.web1.host: host node9 does not exist (known: node1)",
        "policy.yaml:9:11: vms.web1.zone: zone nope does not exist (none are defined)",
        "policy.yaml:10:34: vms.web1.nics[0].ips[0]: 10.9.9.9 is not inside network prod's subnets (10.0.2.0/24, fd00:2::/64)",
    ]


def test_control_characters_and_bad_utf8_have_positions(tmp_path: Path) -> None:
    assert rejected("version: 1\ncomment: \x07\n") == [
        "policy.yaml:2:10: invalid YAML: character #x0007 is not allowed in YAML text"
    ]
    (tmp_path / "p.yaml").write_bytes(b"version: 1\nhosts:\n  n\xc3\xa9\xff: {}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert [str(p) for p in info.value.problems] == ["p.yaml:3:5: not UTF-8 text (invalid start byte)"]

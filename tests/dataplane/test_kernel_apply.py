"""apply_ruleset against the kernel: foreign tables survive, failures change nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest

from zonewall.compiler import nftexpr as x
from zonewall.compiler.ir import Chain, Rule
from zonewall.dataplane.apply import VerifyError, apply_ruleset, remove_ruleset, restore_snapshot, take_snapshot
from zonewall.dataplane.backend import LibNftBackend, NftError
from zonewall.dataplane.readback import listing_hash, readback_hash

from .kernel_helpers import foreign_listing, load_foreign, tables
from .samples import TABLE, node_ruleset

pytestmark = pytest.mark.kernel


@pytest.fixture
def backend(netns_name: str) -> Iterator[LibNftBackend]:
    with LibNftBackend(netns_name) as b:
        yield b


def test_apply_touches_only_our_tables(backend: LibNftBackend, netns_name: str) -> None:
    docker = load_foreign(netns_name)
    ruleset = node_ruleset()
    result = apply_ruleset(backend, ruleset)
    assert result.mode == "full"
    assert sorted(tables(netns_name)) == [("bridge", "zonewall_br"), ("inet", "docker"), ("inet", TABLE)]
    assert foreign_listing(netns_name) == docker
    assert result.readback_hash == readback_hash(backend, ruleset)
    # Re-applying and removing leave Docker alone too.
    apply_ruleset(backend, node_ruleset({"tap5": 5}), previous=ruleset)
    remove_ruleset(backend, ruleset)
    assert tables(netns_name) == [("inet", "docker")]
    assert foreign_listing(netns_name) == docker


def test_failed_transaction_keeps_the_previous_ruleset(backend: LibNftBackend, netns_name: str) -> None:
    docker = load_foreign(netns_name)
    good = node_ruleset()
    first = apply_ruleset(backend, good)
    # A rule jumping to a chain that does not exist: the kernel refuses the batch.
    inet = good.table("inet", TABLE)
    bad_chain = Chain("broken", (Rule((x.jump("no_such_chain"),), "bad"),))
    bad = dataclasses.replace(good, tables=(dataclasses.replace(inet, chains=inet.chains + (bad_chain,)),))
    with pytest.raises(NftError, match="No such file or directory"):
        apply_ruleset(backend, bad)
    with pytest.raises(NftError):
        apply_ruleset(backend, bad, previous=good)  # incremental, then full: both refused
    assert readback_hash(backend, good) == first.readback_hash
    assert foreign_listing(netns_name) == docker


def test_incremental_apply_matches_a_fresh_one(
    backend: LibNftBackend, netns_factory: Callable[[], str]
) -> None:
    old = node_ruleset()
    apply_ruleset(backend, old)
    steps = [
        node_ruleset({"tap1": 22, "tap2": 80, "tap3": 443}),
        node_ruleset({"tap1": 22, "tap3": 443}, admins=("10.0.0.7",)),
        node_ruleset({"tap1": 2222, "tap3": 443}, admins=("10.0.0.0/8", "192.168.0.0/16"), log_rate=99),
        node_ruleset({"tap1": 2222}, policy="accept"),
    ]
    with LibNftBackend(netns_factory()) as reference:
        for new in steps:
            result = apply_ruleset(backend, new, previous=old)
            assert result.mode == "incremental", result.notes
            apply_ruleset(reference, new)
            assert listing_hash(backend, new) == listing_hash(reference, new)
            old = new


def test_snapshot_restore_in_the_kernel(backend: LibNftBackend, netns_name: str) -> None:
    load_foreign(netns_name)
    old = node_ruleset()
    apply_ruleset(backend, old)
    content = listing_hash(backend, old)
    # The dynamic set gets an element with a timeout, as the packet path would add.
    backend.run([{"add": {"element": {"family": "inet", "table": TABLE, "name": "meter",
                                      "elem": [{"elem": {"val": "10.9.9.9", "timeout": 30}}]}}}])
    snapshot = take_snapshot(backend, old)
    result = apply_ruleset(backend, node_ruleset({"tap9": 9}, bridge_table=False), previous=old)
    assert ("bridge", "zonewall_br") not in tables(netns_name)
    restore_snapshot(backend, result.snapshot)  # what an incremental apply started from: `previous`
    assert listing_hash(backend, old) == content
    restore_snapshot(backend, snapshot)  # a listing: dynamic elements come back too
    meter = [o["set"] for o in backend.list_table("inet", TABLE) or [] if o.get("set", {}).get("name") == "meter"]
    assert meter[0]["elem"][0]["elem"]["val"] == "10.9.9.9"


def test_restore_of_a_first_apply_removes_our_tables(backend: LibNftBackend, netns_name: str) -> None:
    load_foreign(netns_name)
    result = apply_ruleset(backend, node_ruleset())
    restore_snapshot(backend, result.snapshot)
    assert tables(netns_name) == [("inet", "docker")]


def test_kernel_readback_mismatch_raises_verify_error(backend: LibNftBackend, netns_name: str) -> None:
    good = node_ruleset()
    apply_ruleset(backend, good)
    content = listing_hash(backend, good)
    # Duplicate set elements: accepted, but the kernel stores one.
    dup = node_ruleset({"tap1": 22, "tap2": 80, "tap4": 1}, admins=("10.0.0.1", "10.0.0.1"))
    with pytest.raises(VerifyError, match="admins has 1 elements, expected 2"):
        apply_ruleset(backend, dup, previous=good)
    assert listing_hash(backend, good) == content

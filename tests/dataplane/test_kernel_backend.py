"""LibNftBackend against the real kernel, inside throwaway namespaces."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

import pytest

from zonewall.dataplane.backend import Backend, LibNftBackend, NftError

from .kernel_helpers import load_foreign, tables

pytestmark = pytest.mark.kernel

T = {"family": "inet", "table": "zwb"}
TABLE = {"add": {"table": {"family": "inet", "name": "zwb"}}}


class _AnyHandle:
    def __eq__(self, other: Any) -> bool:
        return isinstance(other, int)


ANY_HANDLE = _AnyHandle()


def test_run_and_list_inside_the_namespace_only(netns_name: str) -> None:
    with LibNftBackend(netns_name) as backend:
        assert isinstance(backend, Backend)
        backend.run([TABLE, {"add": {"chain": {**T, "name": "c"}}},
                     {"add": {"rule": {**T, "chain": "c", "expr": [{"counter": None}, {"accept": None}],
                                       "comment": "hi"}}}])
        assert backend.list_tables() == [("inet", "zwb")]
        assert tables(netns_name) == [("inet", "zwb")]  # what `nft` sees in that namespace
        objects = backend.list_table("inet", "zwb")
        assert objects is not None and "metainfo" not in objects[0]
        (rule,) = [o["rule"] for o in objects if "rule" in o]
        assert rule["comment"] == "hi"
        assert rule["expr"][0] == {"counter": {"packets": 0, "bytes": 0}}  # readback adds values
        assert "handle" in rule  # JSON listings carry handles even with handle output off
        assert backend.list_table("inet", "nope") is None
    # The calling thread (and process) never left its own namespace.
    with LibNftBackend() as host:
        assert ("inet", "zwb") not in host.list_tables()


def test_errors_carry_libnftables_text_and_change_nothing(netns_name: str) -> None:
    with LibNftBackend(netns_name) as backend:
        backend.run([TABLE])
        before = backend.list_table("inet", "zwb")
        with pytest.raises(NftError, match="Could not process rule: No such file or directory"):
            backend.run([{"add": {"chain": {**T, "name": "c"}}},
                         {"add": {"rule": {**T, "chain": "c", "expr": [{"jump": {"target": "missing"}}]}}}])
        with pytest.raises(NftError, match="Unknown statement object 'bogus'"):
            backend.run([{"add": {"chain": {**T, "name": "c"}}},
                         {"add": {"rule": {**T, "chain": "c", "expr": [{"bogus": None}]}}}])
        assert backend.list_table("inet", "zwb") == before
        backend.run([])  # empty transaction: no-op


def test_missing_namespace_fails_at_construction() -> None:
    with pytest.raises(FileNotFoundError):
        LibNftBackend("zwt-does-not-exist")


def test_two_namespaces_concurrently(netns_factory) -> None:  # type: ignore[no-untyped-def]
    names = [netns_factory(), netns_factory()]
    errors: list[BaseException] = []

    def work(ns: str, n: int) -> None:
        try:
            with LibNftBackend(ns) as backend:
                for i in range(20):
                    backend.run([{"add": {"table": {"family": "inet", "name": f"t{n}_{i}"}}}])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(ns, n)) for n, ns in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(tables(names[0])) == sorted(("inet", f"t0_{i}") for i in range(20))
    assert sorted(tables(names[1])) == sorted(("inet", f"t1_{i}") for i in range(20))


def test_foreign_tables_are_listed(netns_name: str) -> None:
    load_foreign(netns_name)
    with LibNftBackend(netns_name) as backend:
        assert backend.list_tables() == [("inet", "docker")]


def test_a_table_another_program_holds_is_refused_by_name_and_never_listed_by_libnftables(netns_name: str) -> None:
    """nft 1.0.6 prints a `flags owner` table's flags in JSON from past the end of an
    array (garbage, and in an agent once a heap corruption that killed it): the table
    is seen over netlink and refused with its owner named; the others list as usual."""
    owner = subprocess.Popen(["ip", "netns", "exec", netns_name, "nft", "-i"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        assert owner.stdin is not None
        owner.stdin.write("add table inet held { flags owner; }\nadd table ip plain\n")
        owner.stdin.flush()
        deadline = time.monotonic() + 10
        while "table inet held" not in subprocess.run(["ip", "netns", "exec", netns_name, "nft", "list", "tables"], capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, "the owner did not take its table"
            time.sleep(0.05)
        with LibNftBackend(netns_name) as backend:
            for _ in range(50):  # each listing printed garbage before
                assert sorted(backend.list_tables()) == [("inet", "held"), ("ip", "plain")]
                with pytest.raises(NftError, match=r"table inet held is held by another program \(flags owner, netlink port \d+\)"):
                    backend.list_table("inet", "held")
                assert backend.list_table("ip", "plain") == [{"table": {"family": "ip", "name": "plain", "handle": ANY_HANDLE}}]
    finally:
        owner.stdin.close()  # type: ignore[union-attr]
        owner.wait(timeout=10)
    with LibNftBackend(netns_name) as backend:  # the owner gone, its table went with it
        assert backend.list_tables() == [("ip", "plain")]


def test_a_released_cache_leaves_a_working_context_in_the_same_namespace(netns_name: str) -> None:
    with LibNftBackend(netns_name) as backend:
        backend.run([TABLE, {"add": {"chain": {**T, "name": "c"}}}])
        first = backend._worker._nft
        backend.release_cache()
        assert backend._worker._nft is not first  # a new context: the old one (and its cache) is freed
        backend.run([{"add": {"rule": {**T, "chain": "c", "expr": [{"accept": None}]}}}])  # still in the namespace
        assert tables(netns_name) == [("inet", "zwb")]
        objects = backend.list_table("inet", "zwb")
        assert objects is not None and sum("rule" in o for o in objects) == 1
        with pytest.raises(NftError):  # and still refusing what the kernel refuses
            backend.run([{"add": {"rule": {**T, "chain": "missing", "expr": [{"accept": None}]}}}])
    with LibNftBackend() as host:
        assert ("inet", "zwb") not in host.list_tables()

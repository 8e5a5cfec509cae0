"""The only door to the kernel's nftables: one libnftables JSON transaction at a time.

Why a protocol with two implementations: everything above this module (apply, diff,
confirm, the agent) is tested against `FakeBackend` (fake.py) in milliseconds, and the same
code runs against `LibNftBackend` in kernel tests and in production.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from ..netns import enter_netns
from . import nftstate
from .netlink import DumpInterrupted, NfSocket

if TYPE_CHECKING:
    from .nftstate import Scope, TableState

Json = dict[str, Any]
T = TypeVar("T")
TableKey = tuple[str, str]


class NftError(RuntimeError):
    """libnftables refused a transaction; the message is libnftables' own error text.

    The kernel applies a batch completely or not at all, so when this is raised
    nothing has changed.
    """


class Pending(Protocol):
    def wait(self) -> None:
        """Until the transaction is over; raises NftError if it was refused."""


@runtime_checkable
class Backend(Protocol):
    def run(self, commands: list[Json], *, text: str | None = None) -> None:
        """Apply `commands` as ONE transaction (`{"nftables": commands}`). `text`: the
        same document already serialised by the caller (apply.py needs it anyway for
        the fingerprint), so it is not encoded twice."""

    def start(self, commands: list[Json], *, text: str | None = None) -> Pending:
        """`run`, returning at once: the transaction's outcome comes from `wait()`.
        Reads (`read_state`, `generation`) may be made while it runs; transactions
        are made one after another, in the order they were started."""

    def run_as_text(self, commands: list[Json]) -> None:
        """Apply `commands` (add table, add/delete ct timeout only) as ONE transaction
        through nft's text parser: libnftables < 1.0.9 drops a `ct timeout` policy given
        as JSON and aborts the process on a JSON `delete ct timeout` (measured, 1.0.6)."""

    def list_table(self, family: str, name: str) -> list[Json] | None:
        """The table's objects as libnftables JSON (no metainfo), None if absent."""

    def list_tables(self) -> list[tuple[str, str]]:
        """(family, name) of every table in the namespace, ours and foreign."""

    def generation(self) -> int:
        """The ruleset generation: every committed transaction that changes something
        (anyone's, any table) moves it on by one."""

    def read_state(
        self,
        tables: list[TableKey],
        *,
        base: Mapping[TableKey, TableState | None] | None = None,
        scope: Mapping[TableKey, Scope] | None = None,
        steady: bool = True,
    ) -> tuple[int, dict[TableKey, TableState | None]]:
        """(generation, structure and digests of these tables), read at one generation.
        With `base` and `scope`, chains and sets outside the scope come from `base`
        (see nftstate.read_tables). `steady=False`: read once, though transactions
        (the caller's own, started) may commit meanwhile; the generation returned is
        the one before the read, and the caller vouches for what changed after it."""

    def release_cache(self) -> None:
        """Drop what the backend keeps of the kernel's ruleset between calls (a
        long-running agent calls it after an apply; the next call reads afresh)."""


# ---------------------------------------------------------------------------
# libnftables


class _NftWorker:
    """A thread that owns one libnftables context, optionally inside a named netns.

    setns(CLONE_NEWNET) moves only the calling thread, so the process (and any other
    thread) never changes namespace. The netlink socket libnftables opens belongs to
    the namespace of the thread that opens it, so the context is created and used
    only on this thread.
    """

    def __init__(self, netns: str | None) -> None:
        self._nft: Any = None  # the libnftables context: created, used and renewed on the worker thread only
        self._jobs: queue.SimpleQueue[tuple[Callable[[Any], Any], concurrent.futures.Future[Any]] | None]
        self._jobs = queue.SimpleQueue()
        # Opened on the worker thread, in its namespace (a socket stays in the namespace
        # it was opened in), and lent to one thread at a time (`reading`): reads then
        # go on while a libnftables transaction runs (apply's staged creation overlaps them).
        self.netlink: NfSocket
        self._netlink_lock = threading.Lock()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._main, args=(netns, ready), name=f"zonewall-nft[{netns or 'host'}]", daemon=True
        )
        self._thread.start()
        ready.result()  # re-raises a failed setns / missing libnftables here, in the caller

    def _main(self, netns: str | None, ready: concurrent.futures.Future[None]) -> None:
        try:
            if netns is not None:
                enter_netns(netns)
            self._nft = _context()
            self.netlink = NfSocket()  # for readback (nftstate.py); this thread's namespace
        except BaseException as exc:  # noqa: BLE001 - handed to the constructing thread
            ready.set_exception(exc)
            return
        ready.set_result(None)
        while (job := self._jobs.get()) is not None:
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(self._nft))
            except BaseException as exc:  # noqa: BLE001
                future.set_exception(exc)
        self._nft = None
        self.netlink.close()

    def renew(self) -> None:
        """A new libnftables context in place of the old one, which is freed with the
        cache of the kernel's ruleset libnftables keeps in it after each command (at
        a 10,000-VM node's first apply ~20 MB of C heap an agent would hold for good)."""

        def renew(_old: Any) -> None:
            self._nft = _context()  # the old context's last reference goes: nft_ctx_free

        self.call(renew)

    def submit(self, fn: Callable[[Any], T]) -> concurrent.futures.Future[T]:
        if not self._thread.is_alive():
            raise RuntimeError("libnftables worker is closed")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return future

    def call(self, fn: Callable[[Any], T]) -> T:
        return self.submit(fn).result()

    @contextmanager
    def reading(self) -> Iterator[NfSocket]:
        """The netlink socket, for the calling thread alone while inside."""
        if not self._thread.is_alive():
            raise RuntimeError("libnftables worker is closed")
        with self._netlink_lock:
            yield self.netlink

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            if threading.current_thread() is not self._thread:
                self._thread.join()


def _context() -> Any:
    import nftables  # imported here so a missing binding fails at construction

    nft = nftables.Nftables()
    nft.set_json_output(True)
    nft.set_handle_output(False)
    return nft


def _use_utc() -> None:
    """libnftables converts `meta hour` between local time and the kernel's UTC with
    the process timezone; the compiler already emits UTC, so the process must be UTC
    or every scheduled window would shift by the local offset."""
    if os.environ.get("TZ") != "UTC":
        os.environ["TZ"] = "UTC"
        time.tzset()


class LibNftBackend:
    """libnftables through its JSON API, optionally inside the named netns `netns`.

    Raises OSError at construction if the namespace does not exist.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        _use_utc()
        self._worker = _NftWorker(netns)
        # Stop the thread when the backend is garbage collected without close().
        self._finalizer = weakref.finalize(self, self._worker.close)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> LibNftBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json_cmd(self, document: Json) -> tuple[int, Any, str]:
        try:
            return self._worker.call(lambda nft: nft.json_cmd(document))
        except ValueError as exc:  # e.g. nft 1.0.6 lists a table with `flags owner` as broken JSON (list_table avoids that)
            raise NftError(f"libnftables answered with JSON that cannot be read ({exc}); is a table held by another program (flags owner)?") from None

    def run(self, commands: list[Json], *, text: str | None = None) -> None:
        self.start(commands, text=text).wait()

    def start(self, commands: list[Json], *, text: str | None = None) -> _Transaction:
        if not commands:
            return _Transaction(None)  # an empty batch is a no-op; skip the netlink round trip
        if text is None:
            text = json.dumps({"nftables": commands}, separators=(",", ":"))
        # JSON output is on, so libnftables parses the input as JSON (json_cmd does
        # exactly this after encoding the document itself)
        return _Transaction(self._worker.submit(lambda nft: nft.cmd(text)))

    def run_as_text(self, commands: list[Json]) -> None:
        if not commands:
            return
        text = text_commands(commands)
        rc, _out, err = self._worker.call(lambda nft: nft.cmd(text))
        if rc != 0:
            raise NftError(_clean_error(err) or f"libnftables returned {rc}")

    def list_table(self, family: str, name: str) -> list[Json] | None:
        held = self._tables()
        if (family, name) not in held:
            return None
        owner = held[(family, name)]
        if owner is not None:  # never listed by libnftables (nftstate.tables says why)
            raise NftError(f"table {family} {name} is held by another program (flags owner, netlink port {owner}): "
                           "the kernel lets only that program change it")
        rc, out, err = self._json_cmd({"nftables": [{"list": {"table": {"family": family, "name": name}}}]})
        if rc != 0:
            # Deleted between the two calls: same answer as "absent".
            if "No such file or directory" in err:
                return None
            raise NftError(_clean_error(err))
        return _objects(out)

    def list_tables(self) -> list[tuple[str, str]]:
        return list(self._tables())

    def _tables(self) -> dict[TableKey, int | None]:
        """Every table, with the netlink port of the program holding it, if one does."""
        with self._worker.reading() as sock:
            return nftstate.tables(sock)

    def generation(self) -> int:
        with self._worker.reading() as sock:
            return nftstate.generation(sock)

    def read_state(
        self,
        tables: list[TableKey],
        *,
        base: Mapping[TableKey, TableState | None] | None = None,
        scope: Mapping[TableKey, Scope] | None = None,
        steady: bool = True,
    ) -> tuple[int, dict[TableKey, TableState | None]]:
        with self._worker.reading() as sock:
            for _attempt in range(_READ_ATTEMPTS):
                before = nftstate.generation(sock)
                try:
                    state = nftstate.read_tables(sock, tables, base=base, scope=scope)
                except DumpInterrupted:
                    continue
                if not steady or nftstate.generation(sock) == before:
                    return before, state
        raise NftError(f"the ruleset changed during each of {_READ_ATTEMPTS} attempts to read it back")

    def release_cache(self) -> None:
        self._worker.renew()


_READ_ATTEMPTS = 5


class _Transaction:
    """A transaction given to the worker (None: nothing to do)."""

    def __init__(self, future: concurrent.futures.Future[tuple[int, Any, str]] | None) -> None:
        self._future = future

    def wait(self) -> None:
        if self._future is None:
            return
        rc, _out, err = self._future.result()
        if rc != 0:
            raise NftError(_clean_error(err) or f"libnftables returned {rc}")


_TEXT_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_TIMEOUT_STATES = {
    "tcp": {"syn_sent", "syn_recv", "established", "fin_wait", "close_wait", "last_ack", "time_wait", "close", "syn_sent2", "retrans", "unacknowledged"},
    "udp": {"unreplied", "replied"},
}


def text_commands(commands: list[Json]) -> str:
    """The nft text of `run_as_text` commands. Only a closed set of commands, and every
    name and value is checked against a strict pattern first: nothing arbitrary is
    ever spliced into nft text (NftError otherwise)."""

    def word(value: Any) -> str:
        if not isinstance(value, str) or not _TEXT_WORD.fullmatch(value) or value in ("fwd",):
            raise NftError(f"refusing to write {value!r} into nft text")
        return value

    lines = []
    for command in commands:
        ((verb, body),) = command.items()
        ((kind, obj),) = body.items()
        if (verb, kind) == ("add", "table"):
            lines.append(f"add table {word(obj['family'])} {word(obj['name'])}")
            continue
        if kind != "ct timeout" or verb not in ("add", "delete"):
            raise NftError(f"run_as_text does not take '{verb} {kind}'")
        where = f"{word(obj['family'])} {word(obj['table'])} {word(obj['name'])}"
        if verb == "delete":
            lines.append(f"delete ct timeout {where}")
            continue
        protocol = word(obj["protocol"])
        states = _TIMEOUT_STATES.get(protocol)
        if states is None:
            raise NftError(f"nft has no ct timeout policy for protocol {protocol!r}")
        policy = []
        for state, seconds in obj.get("policy", {}).items():
            if state not in states or isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 < seconds < 2**31:
                raise NftError(f"bad ct timeout policy entry {state!r}: {seconds!r}")
            policy.append(f"{state} : {seconds}")
        parts = [f"protocol {protocol};", f"l3proto {word(obj.get('l3proto', 'inet'))};"]
        if policy:
            parts.append("policy = { " + ", ".join(policy) + " };")
        lines.append(f"add ct timeout {where} {{ " + " ".join(parts) + " }")
    return "\n".join(lines) + "\n"


def _objects(output: Any) -> list[Json]:
    """The `nftables` array without its metainfo header."""
    if not output:
        return []
    return [o for o in output["nftables"] if "metainfo" not in o]


def _clean_error(err: str) -> str:
    # libnftables prefixes JSON-input errors with a meaningless "internal:0:0-0: "
    # location and separates messages with blank lines.
    lines = [line.removeprefix("internal:0:0-0: ").strip() for line in err.splitlines()]
    return "\n".join(line for line in lines if line)


__all__ = ["Backend", "Json", "LibNftBackend", "NftError"]

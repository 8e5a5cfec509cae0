"""Typed rule statements <-> libnftables JSON statement objects: the one encoder.

Each statement class of `stmt` has one function here writing the object libnftables
expects (key order as the goldens and fingerprints have always had it), and
`decode_statement` reads back the statements a kernel listing's readers need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from . import stmt as s

Json = dict[str, Any]


def _match(st: s.Match) -> Json:
    return {"match": {"op": st.op, "left": st.left, "right": st.right}}


def _counter(_st: s.Counter) -> Json:
    return {"counter": None}


def _verdict(st: s.Verdict) -> Json:
    return {st.kind: None if st.target is None else {"target": st.target}}


def _mangle(st: s.Mangle) -> Json:
    return {"mangle": {"key": st.key, "value": st.value}}


def _reject(st: s.Reject) -> Json:
    return {"reject": {"type": st.type} if st.code is None else {"type": st.type, "expr": st.code}}


def _log(st: s.Log) -> Json:
    return {"log": {"group": st.group, "prefix": st.prefix}}


def _rate_limit(st: s.RateLimit) -> Json:
    body: Json = {"rate": st.rate, "per": st.per, "burst": st.burst, "unit": "packets"}
    if st.over:
        body["inv"] = True
    return {"limit": body}


def _limit_ref(st: s.LimitRef) -> Json:
    return {"limit": st.name}


def _set_update(st: s.SetUpdate) -> Json:
    body: Json = {"op": st.op, "elem": st.elem, "set": "@" + st.set}
    if st.statements:
        body["stmt"] = statements_json(st.statements)
    return {"set": body}


def _vmap(st: s.VMap) -> Json:
    return {"vmap": {"key": st.key, "data": "@" + st.map}}


def _ct_helper(st: s.CtHelperSet) -> Json:
    return {"ct helper": st.name}


def _ct_timeout(st: s.CtTimeoutSet) -> Json:
    return {"ct timeout": st.name}


def _nat(st: s.Nat) -> Json:
    if st.kind == "masquerade":
        return {"masquerade": None}
    body: Json = {"family": st.family}
    if st.addr is not None:
        body["addr"] = st.addr
    if st.port is not None:
        body["port"] = st.port
    return {st.kind: body}


ENCODERS: dict[type, Callable[[Any], Json]] = {
    s.Match: _match, s.Counter: _counter, s.Verdict: _verdict, s.Mangle: _mangle, s.Reject: _reject,
    s.Log: _log, s.RateLimit: _rate_limit, s.LimitRef: _limit_ref, s.SetUpdate: _set_update, s.VMap: _vmap,
    s.CtHelperSet: _ct_helper, s.CtTimeoutSet: _ct_timeout, s.Nat: _nat,
}


VERDICT_KINDS: tuple[s.VerdictKind, ...] = ("accept", "drop", "return", "jump", "goto")


def decode_statement(obj: Json) -> s.Statement | None:
    """A listed statement as a typed one: counters and verdicts (what `dataplane.counters`
    reads); None for any other statement."""
    if "counter" in obj:
        body = obj["counter"]
        if isinstance(body, dict):
            return s.Counter(int(body.get("packets", 0)), int(body.get("bytes", 0)))
        return s.COUNTER if body is None else None  # a named counter is not the rule's own
    for kind in VERDICT_KINDS:
        if kind in obj:
            body = obj[kind]
            return s.Verdict(kind, str(body.get("target", "")) if isinstance(body, dict) else None)
    return None


def statement_json(st: s.Statement) -> Json:
    return ENCODERS[type(st)](st)


def statements_json(statements: Iterable[s.Statement]) -> list[Json]:
    encoders = ENCODERS
    return [encoders[type(st)](st) for st in statements]

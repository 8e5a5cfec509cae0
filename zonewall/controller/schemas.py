"""Request and response bodies of the REST API (they make the OpenAPI document)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, StringConstraints

from .store.db import as_utc
from .store.models import NodeRow, RevisionRow, TokenRow


class ChangeMeta(BaseModel):
    message: str = Field("", max_length=4000, description="why: recorded in the revision")
    base_revision: int | None = Field(None, description="refuse (409) unless this is still the current revision")


class DocumentsIn(ChangeMeta):
    documents: dict[str, str] = Field(..., description="file name (e.g. zones.yaml, vms/web.yaml) -> YAML text; the whole policy")


class DocumentIn(ChangeMeta):
    text: str = Field(..., description="the YAML text of this one document")


class RuleIn(ChangeMeta):
    rule: dict[str, Any] = Field(..., description="one rule as in the policy format, e.g. {id: ssh-in, direction: in, action: accept, service: ssh}")
    position: int | None = Field(None, ge=0, le=1_000_000, description="index in the rule list (first match wins); default: last")


class ZoneIn(ChangeMeta):
    zone: str | None = Field(..., description="the new zone, or null for none")


class RollbackIn(BaseModel):
    message: str = Field("", max_length=4000)


class RevisionSummary(BaseModel):
    number: int
    created_at: datetime
    author: str
    message: str
    kind: str
    change: dict[str, Any]
    rollback_of: int | None
    content_hash: str
    flows_changed: int | None = Field(None, description="rows of the semantic diff (None: not computed)")

    @classmethod
    def of(cls, row: RevisionRow) -> RevisionSummary:
        return cls(**_summary(row, json.loads(row.diff) if row.diff else None))


def _summary(row: RevisionRow, diff: dict[str, Any] | None) -> dict[str, Any]:
    """A revision's summary fields, its diff read once by the caller."""
    return {"number": row.number, "created_at": as_utc(row.created_at), "author": row.author, "message": row.message,
            "kind": row.kind, "change": json.loads(row.change or "{}"), "rollback_of": row.rollback_of,
            "content_hash": row.content_hash, "flows_changed": len(diff["flows"]) if diff else None}


class RevisionOut(RevisionSummary):
    diff: dict[str, Any] | None = Field(None, description="zonewall diff JSON against the previous revision")
    diff_error: str | None = None
    documents: dict[str, str] | None = None

    @classmethod
    def full(cls, row: RevisionRow, documents: dict[str, str] | None = None) -> RevisionOut:
        diff = json.loads(row.diff) if row.diff else None
        return cls(**_summary(row, diff), diff=diff, diff_error=row.diff_error, documents=documents)


class ChangeOut(BaseModel):
    created: bool = Field(..., description="false: the result equals the current revision, nothing new was recorded")
    revision: RevisionOut


class PolicyOut(BaseModel):
    revision: int
    documents: dict[str, str]


class DesiredOut(BaseModel):
    node: str
    changed: bool = Field(..., description="false: the wait ended with no revision newer than `after`")
    revision: int
    in_policy: bool = Field(True, description="false: the policy has no host of this name")
    content_hash: str | None = Field(None, description="the hash of the node's documents (what `have` names)")
    protocol: int = Field(2, description="the agent protocol of this answer")
    same: bool = Field(False, description="the node's documents are those it has (`have`): only the revision number is new")
    delta: dict[str, Any] | None = Field(None, description="the change against the documents it has: base, changed, added, removed")
    documents: dict[str, str] | None = Field(None, description="the node's documents: the policy with other nodes' VM rules left out")


class RegisterIn(BaseModel):
    agent_version: str = Field("", max_length=64)
    hostname: str = Field("", max_length=255)


class LogLine(BaseModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    message: str = Field(..., max_length=4000)


def _cut(limit: int) -> Any:
    """Text over `limit` is shortened, not refused: a node whose error report is
    refused would go on showing `ok` (the whole ruleset once came back as the error)."""

    def cut(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            return f"{value[:limit]}... ({len(value) - limit} more characters)"
        return value

    return BeforeValidator(cut)


TapName = Annotated[str, StringConstraints(max_length=64)]


class StatusIn(BaseModel):
    applied_revision: int | None = Field(None, ge=0, le=2**31 - 1)
    fingerprint: str | None = Field(None, max_length=64)
    ruleset_hash: str | None = Field(None, max_length=64)
    state: Literal["ok", "degraded", "error"] = Field(..., description="degraded: the rules are applied, but part of the agent (its packet log, ...) is failing: see `problems`")
    last_error: Annotated[str | None, _cut(4000)] = None
    problems: list[Annotated[str, _cut(600)]] = Field([], max_length=32, description="what is wrong with the agent itself, one line each")
    drift_repairs: int = Field(0, ge=0, le=2**62)
    taps: dict[TapName, TapName] | None = Field(None, max_length=4096, description="NIC (vm/index) -> the port found for it")
    lines: list[LogLine] = Field([], max_length=200, description="log lines sent along (saves a request per apply)")
    apply_seconds: float | None = Field(None, ge=0, description="wall time of the last apply (compile + transaction + readback)")


class LogsIn(BaseModel):
    lines: list[LogLine] = Field(..., max_length=200)


class LogOut(LogLine):
    time: datetime


class NodeOut(BaseModel):
    name: str
    registered: bool
    in_policy: bool
    registered_at: datetime | None = None
    last_contact: datetime | None = None
    agent_version: str = ""
    hostname: str = ""
    applied_revision: int | None = Field(None, ge=0, le=2**31 - 1)
    in_sync: bool = Field(False, description="the node reported the current revision as applied, without error")
    fingerprint: str | None = None
    ruleset_hash: str | None = None
    state: str = "never seen"
    last_error: str | None = None
    problems: list[str] = []
    drift_repairs: int = 0
    taps: dict[str, str] = {}
    apply_seconds: float | None = None

    @classmethod
    def of(cls, name: str, row: NodeRow | None, in_policy: bool, current: int | None) -> NodeOut:
        if row is None:
            return cls(name=name, registered=False, in_policy=in_policy)
        return cls(
            name=name, registered=True, in_policy=in_policy,
            registered_at=as_utc(row.registered_at), last_contact=as_utc(row.last_contact),
            agent_version=row.agent_version, hostname=row.hostname, applied_revision=row.applied_revision,
            in_sync=current is not None and row.applied_revision == current and row.state in ("ok", "degraded"),
            fingerprint=row.fingerprint, ruleset_hash=row.ruleset_hash, state=row.state, last_error=row.last_error,
            problems=json.loads(row.problems or "[]"),
            drift_repairs=row.drift_repairs, taps=json.loads(row.taps or "{}"), apply_seconds=row.apply_seconds,
        )


class TokenIn(BaseModel):
    role: Literal["admin", "viewer", "agent"]
    name: str | None = Field(None, max_length=128)
    node: str | None = Field(None, description="agent tokens: the node they belong to")


class TokenOut(BaseModel):
    id: int
    name: str
    role: str
    node: str | None
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: TokenRow) -> TokenOut:
        return cls(id=row.id, name=row.name, role=row.role, node=row.node, created_at=as_utc(row.created_at), revoked_at=as_utc(row.revoked_at))


class TokenCreated(TokenOut):
    token: str = Field(..., description="the secret: shown this once, stored only as a hash")


class PacketRecordIn(BaseModel):
    """One NFLOG record as an agent decoded it (docs/controller.md, "Packet logs")."""

    time: float
    vm: str | None = Field(None, max_length=64)
    nic: str | None = Field(None, max_length=80)
    direction: str | None = Field(None, max_length=8)
    family: str | None = Field(None, max_length=8)
    src: str | None = Field(None, max_length=45)
    dst: str | None = Field(None, max_length=45)
    proto: str | None = Field(None, max_length=16)
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    verdict: str | None = Field(None, max_length=16)
    rule: str | None = Field(None, max_length=128)
    scope: str | None = Field(None, max_length=128)
    level: str | None = Field(None, max_length=16)
    iface: str | None = Field(None, max_length=32)


class RecordBatchIn(BaseModel):
    batch_id: str = Field(..., min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="chosen by the agent; a batch id already stored is acknowledged and ignored")
    records: list[PacketRecordIn] = Field([], max_length=5000)
    suppressed: int = Field(0, ge=0, description="records the log rate suppressed since the previous batch")
    dropped: int = Field(0, ge=0, description="records the agent's full buffer dropped since the previous batch")


class RecordBatchOut(BaseModel):
    stored: int
    duplicate: bool
    refused: int = Field(0, description="records about VMs that do not run on this node (not stored)")
    clamped: int = Field(0, description="records dated too far ahead or past the retention: stored at their arrival, `agent_time` kept")


class RuleCounterIn(BaseModel):
    level: str = Field(..., max_length=16)
    scope: str = Field(..., max_length=128)
    direction: str = Field(..., max_length=8)
    rule: str = Field(..., max_length=128)
    verdict: str = Field("", max_length=16)
    packets: int = Field(..., ge=0)
    bytes: int = Field(..., ge=0)
    instances: list[tuple[str, int, int]] | None = Field(None, max_length=1024, description="(family:handle, packets, bytes) of each kernel rule: a new handle counts from 0")
    was: str | None = Field(None, max_length=128, description="the rule id this rule's kernel rules had before an apply only renamed them "
                                                             "(a derived id moved by a line added above it): its counts move with it")


class CountersIn(BaseModel):
    counters: list[RuleCounterIn] = Field(..., max_length=200000)
    partial: bool = Field(False, description="only the counters that moved since the last report the controller accepted; "
                                             "false: the node's whole reading (rules missing from it are gone from the node)")

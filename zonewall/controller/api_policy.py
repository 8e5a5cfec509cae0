"""/api/v1/policy, /vms, /zones, /revisions: the policy and its history.

Every write validates the whole resulting policy; a refused one answers 422 with
the loader's problems (`file:line:col`) and leaves the current revision in place.
An accepted one is a new revision (201), answered with its semantic diff.
Every write takes `?dry_run=true` (preview.py): the same validation and the diff
against the current revision, nothing committed.

Writes may carry an `Idempotency-Key` header: a retry of a request that was already
applied (its answer was lost, its controller died) gets that request's answer and
applies nothing again, through whichever controller it reaches. A change that lost
a race against another writer gets 409 with the winning revision.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel

from ..policy import edits
from ..policy.documents import Documents, problems_json
from ..policy.errors import PolicyError
from . import auth, preview
from .after_response import after_response
from .deps import controller
from .schemas import (
    ChangeMeta,
    ChangeOut,
    DocumentIn,
    DocumentsIn,
    PolicyOut,
    RevisionOut,
    RevisionSummary,
    RollbackIn,
    RuleIn,
    ZoneIn,
)
from .store.revisions import Committed, Conflict, Idempotency, KeyReused, Proposal
from .store.tokens import Principal

router = APIRouter(prefix="/api/v1")
NAME = r"^[a-z0-9][a-z0-9_-]{0,30}$"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, e.g. a UUID


def idempotency(request: Request, payload: BaseModel | None) -> Idempotency | None:
    """The request's idempotency key with a digest of what it asks (None: no key)."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise HTTPException(status_code=400, detail=f"{IDEMPOTENCY_HEADER}: 1 to 128 printable ASCII characters")
    what = [request.method, request.url.path, sorted(request.query_params.multi_items()), payload.model_dump(mode="json") if payload else None]
    return Idempotency(key, hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest())


def _answer(request: Request, response: Response, committed: Committed) -> ChangeOut:
    ctl = controller(request)
    if committed.created and not committed.replayed:
        ctl.watch.settle(committed.row.number)  # the woken agents answered before the diff takes the CPU
        number = committed.row.number
        after_response(request, lambda: ctl.revisions.release(number))  # the other nodes: once this answer is out
    row = ctl.revisions.attach_diff(committed, release=False)
    response.status_code = 201 if committed.created else 200
    if committed.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return ChangeOut(created=committed.created, revision=RevisionOut.full(row))


def _replayed(request: Request, response: Response, key: Idempotency | None) -> ChangeOut | None:
    """The first answer to a retried targeted change (before it is computed again on
    the newer documents, where it would apply twice)."""
    if key is None:
        return None
    try:
        committed = controller(request).revisions.replay(key)
    except KeyReused as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return _answer(request, response, committed) if committed is not None else None


def _commit(
    request: Request,
    response: Response,
    who: Principal,
    documents: Documents,
    meta: ChangeMeta,
    kind: str,
    *,
    change: dict[str, Any] | None = None,
    rollback_of: int | None = None,
    base_revision: int | None = None,
    edited: edits.Edited | None = None,
    payload: BaseModel | None = None,
) -> ChangeOut:
    ctl = controller(request)
    proposal = Proposal(
        documents=documents, author=who.name, message=meta.message, kind=kind, change=change or {},
        rollback_of=rollback_of, base_revision=meta.base_revision if meta.base_revision is not None else base_revision,
        idempotency=idempotency(request, payload if payload is not None else meta),
    )
    try:
        if preview.requested(request):  # ?dry_run=true: the diff, nothing committed
            return preview.respond(ctl, documents, change)  # type: ignore[return-value]
        committed = ctl.revisions.commit(proposal)
    except PolicyError as exc:
        detail: dict[str, Any] = {"error": "policy rejected; the current revision stays", "problems": problems_json(exc)}
        if edited is not None:  # line:col refer to the rewritten document: show it
            detail["edited"] = {edited.document: edited.documents[edited.document]}
        raise HTTPException(status_code=422, detail=detail) from None
    except Conflict as exc:
        raise HTTPException(status_code=409, detail={"error": str(exc), "current_revision": exc.current}) from None
    except KeyReused as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return _answer(request, response, committed)


def query_meta(
    message: str = Query("", max_length=4000, description="why: recorded in the revision"),
    base_revision: int | None = Query(None, description="refuse (409) unless this is still the current revision"),
) -> ChangeMeta:
    """ChangeMeta from the query string, for DELETE requests (which carry no body)."""
    return ChangeMeta(message=message, base_revision=base_revision)


def _current_documents(request: Request) -> tuple[int, Documents]:
    revisions = controller(request).revisions
    row = revisions.current()
    if row is None:
        raise HTTPException(status_code=409, detail="there is no policy yet: upload one first (PUT /api/v1/policy)")
    return row.number, revisions.documents_of(row)


def _targeted(request: Request, response: Response, who: Principal, meta: ChangeMeta, make: Any) -> ChangeOut:
    replayed = _replayed(request, response, idempotency(request, meta))
    if replayed is not None:
        return replayed
    number, documents = _current_documents(request)
    try:
        edited = make(documents)
    except edits.ChangeError as exc:
        raise HTTPException(status_code=exc.status, detail=str(exc)) from None
    return _commit(request, response, who, edited.documents, meta, "change", change=edited.summary, base_revision=number, edited=edited)


# -- whole documents -----------------------------------------------------------------


@router.get("/policy", response_model=PolicyOut, tags=["policy"], summary="The current policy documents")
def get_policy(request: Request, _: Principal = Depends(auth.reader)) -> PolicyOut:
    number, documents = _current_documents(request)
    return PolicyOut(revision=number, documents=documents)


@router.put("/policy", response_model=ChangeOut, status_code=201, tags=["policy"], summary="Replace the whole policy")
def put_policy(body: DocumentsIn, request: Request, response: Response, who: Principal = Depends(auth.admin)) -> ChangeOut:
    return _commit(request, response, who, body.documents, body, "upload", change={"op": "upload", "documents": sorted(body.documents)})


@router.put("/policy/documents/{name:path}", response_model=ChangeOut, status_code=201, tags=["policy"], summary="Add or replace one document")
def put_document(name: str, body: DocumentIn, request: Request, response: Response, who: Principal = Depends(auth.admin)) -> ChangeOut:
    replayed = _replayed(request, response, idempotency(request, body))
    if replayed is not None:
        return replayed
    number, documents = _current_documents(request)
    documents[name] = body.text
    return _commit(request, response, who, documents, body, "upload", change={"op": "put-document", "document": name}, base_revision=number)


@router.delete("/policy/documents/{name:path}", response_model=ChangeOut, status_code=201, tags=["policy"], summary="Remove one document")
def delete_document(
    name: str, request: Request, response: Response, meta: ChangeMeta = Depends(query_meta), who: Principal = Depends(auth.admin)
) -> ChangeOut:
    replayed = _replayed(request, response, idempotency(request, meta))
    if replayed is not None:
        return replayed
    number, documents = _current_documents(request)
    if documents.pop(name, None) is None:
        raise HTTPException(status_code=404, detail=f"no document named {name!r}")
    return _commit(request, response, who, documents, meta, "upload", change={"op": "delete-document", "document": name}, base_revision=number)


# -- targeted changes ------------------------------------------------------------------


@router.post("/vms/{vm}/rules", response_model=ChangeOut, status_code=201, tags=["changes"], summary="Add a rule to a VM")
def add_vm_rule(body: RuleIn, request: Request, response: Response, vm: str = Path(..., pattern=NAME), who: Principal = Depends(auth.admin)) -> ChangeOut:
    return _targeted(request, response, who, body, lambda docs: edits.add_rule(docs, "vms", vm, body.rule, body.position))


@router.delete("/vms/{vm}/rules/{rule_id}", response_model=ChangeOut, status_code=201, tags=["changes"], summary="Remove a VM rule by its id")
def remove_vm_rule(
    rule_id: str, request: Request, response: Response, vm: str = Path(..., pattern=NAME), meta: ChangeMeta = Depends(query_meta), who: Principal = Depends(auth.admin)
) -> ChangeOut:
    return _targeted(request, response, who, meta, lambda docs: edits.remove_rule(docs, "vms", vm, rule_id))


@router.put("/vms/{vm}/zone", response_model=ChangeOut, status_code=201, tags=["changes"], summary="Move a VM to another zone")
def move_vm(body: ZoneIn, request: Request, response: Response, vm: str = Path(..., pattern=NAME), who: Principal = Depends(auth.admin)) -> ChangeOut:
    return _targeted(request, response, who, body, lambda docs: edits.move_vm(docs, vm, body.zone))


@router.post("/zones/{zone}/rules", response_model=ChangeOut, status_code=201, tags=["changes"], summary="Add a rule to a zone")
def add_zone_rule(body: RuleIn, request: Request, response: Response, zone: str = Path(..., pattern=NAME), who: Principal = Depends(auth.admin)) -> ChangeOut:
    return _targeted(request, response, who, body, lambda docs: edits.add_rule(docs, "zones", zone, body.rule, body.position))


@router.delete("/zones/{zone}/rules/{rule_id}", response_model=ChangeOut, status_code=201, tags=["changes"], summary="Remove a zone rule by its id")
def remove_zone_rule(
    rule_id: str, request: Request, response: Response, zone: str = Path(..., pattern=NAME), meta: ChangeMeta = Depends(query_meta), who: Principal = Depends(auth.admin)
) -> ChangeOut:
    return _targeted(request, response, who, meta, lambda docs: edits.remove_rule(docs, "zones", zone, rule_id))


# -- history ---------------------------------------------------------------------------


@router.get("/revisions", response_model=list[RevisionSummary], tags=["revisions"], summary="Revisions, newest first")
def list_revisions(
    request: Request, limit: int = Query(50, ge=1, le=1000), before: int | None = Query(None, description="only revisions older than this"),
    _: Principal = Depends(auth.reader),
) -> list[RevisionSummary]:
    return [RevisionSummary.of(row) for row in controller(request).revisions.history(limit, before)]


@router.get("/revisions/{number}", response_model=RevisionOut, tags=["revisions"], summary="One revision with its diff (and documents)")
def show_revision(number: int, request: Request, documents: bool = True, _: Principal = Depends(auth.reader)) -> RevisionOut:
    row = controller(request).revisions.get(number)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no revision {number}")
    return RevisionOut.full(row, controller(request).revisions.documents_of(row) if documents else None)


@router.post("/revisions/{number}/rollback", response_model=ChangeOut, status_code=201, tags=["revisions"], summary="Make an old revision current again (as a new revision)")
def rollback(number: int, body: RollbackIn, request: Request, response: Response, who: Principal = Depends(auth.admin)) -> ChangeOut:
    row = controller(request).revisions.get(number)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no revision {number}")
    meta = ChangeMeta(message=body.message or f"rollback to revision {number}")
    return _commit(request, response, who, controller(request).revisions.documents_of(row), meta, "rollback", change={"op": "rollback", "to": number}, rollback_of=number,
                   payload=body)

"""Dry runs: what a write would do, without committing it.

Every policy write of the API (`PUT /policy`, one document, the targeted changes,
a rollback) accepts `?dry_run=true`: the resulting documents are validated exactly
like a commit (a refused policy answers 422 with its problems) and compared with
the current revision, and the answer is the semantic diff (`zonewall diff --json`)
with the revision it was computed against. Nothing is stored and no agent hears of
it. A client commits afterwards with `base_revision` set to that revision, so a
change committed by someone else in between is refused (409) instead of being
applied unseen (`zonewall push`, the dashboard's editor).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from ..analysis.diff import diff_policies
from ..compiler.schedule import local_timezone
from ..handover import handing_over_often
from ..policy.documents import Documents, load_documents
from ..policy.model import PolicyDocument
from ..policy.resolve import Policy

QUERY = "dry_run"


def requested(request: Request) -> bool:
    return request.query_params.get(QUERY, "").lower() in ("1", "true", "yes")


def documents_changed(before: Documents, after: Documents) -> dict[str, list[str]]:
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "modified": sorted(name for name in set(before) & set(after) if before[name] != after[name]),
    }


def preview(ctl: Any, documents: Documents, change: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dry-run answer for `documents` (PolicyError if they are refused)."""
    with handing_over_often():  # seconds of CPU at size, beside the agents' requests (handover.py)
        policy = load_documents(documents)
        row = ctl.revisions.current()
        before: Documents = ctl.revisions.documents_of(row) if row is not None else {}
        previous = ctl.revisions.policy_of(row) if row is not None else Policy(PolicyDocument(version=1), None)
        identical = row is not None and before == documents
        diff = diff_policies(previous, policy, timezone=local_timezone())
    return {
        "dry_run": True,
        "base_revision": row.number if row is not None else 0,
        "identical": identical,  # the documents equal the current revision's: a commit would record nothing
        "change": change or {},
        "documents": documents_changed(before, documents),
        "diff": diff.to_json(),
    }


def respond(ctl: Any, documents: Documents, change: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse(preview(ctl, documents, change))

"""Whole-list edits: a VM's or a zone's rules, a group's members, replaced at once.

What the dashboard's editor commits (and a script may use): the list given becomes
the list in the defining document, whose comments and layout stay where the list
did not change (yamlpatch.py). Like every write: `base_revision`, `?dry_run=true`,
validation of the whole policy (422 with `file:line:col`), a revision with its diff.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import Field

from ..policy import edits
from . import auth
from .api_policy import NAME, _targeted
from .schemas import ChangeMeta, ChangeOut
from .store.tokens import Principal

router = APIRouter(prefix="/api/v1", tags=["changes"])


class RulesIn(ChangeMeta):
    rules: list[dict[str, Any]] = Field(..., max_length=10000, description="the whole rule list, in order (first match wins)")


class MembersIn(ChangeMeta):
    members: list[str] = Field(..., max_length=100000, description="addresses, CIDRs, ranges and references (group:, zone:, vm:, ...)")


@router.put("/vms/{vm}/rules", response_model=ChangeOut, status_code=201, summary="Replace a VM's rules")
def set_vm_rules(body: RulesIn, request: Request, response: Response, vm: str = Path(..., pattern=NAME), who: Principal = Depends(auth.admin)) -> ChangeOut:
    return _targeted(request, response, who, body, lambda docs: edits.replace_rules(docs, "vms", vm, body.rules))


@router.put("/zones/{zone}/rules", response_model=ChangeOut, status_code=201, summary="Replace a zone's rules")
def set_zone_rules(body: RulesIn, request: Request, response: Response, zone: str = Path(..., pattern=NAME), who: Principal = Depends(auth.admin)) -> ChangeOut:
    return _targeted(request, response, who, body, lambda docs: edits.replace_rules(docs, "zones", zone, body.rules))


@router.put("/groups/{group}/members", response_model=ChangeOut, status_code=201, summary="Replace a group's members")
def set_group_members(body: MembersIn, request: Request, response: Response, group: str = Path(..., pattern=NAME), who: Principal = Depends(auth.admin)) -> ChangeOut:
    return _targeted(request, response, who, body, lambda docs: edits.replace_members(docs, group, body.members))

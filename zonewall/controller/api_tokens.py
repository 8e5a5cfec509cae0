"""/api/v1/tokens: admins create, list and revoke API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from . import auth
from .deps import controller
from .schemas import TokenCreated, TokenIn, TokenOut
from .store.tokens import Principal, TokenError, create_token, list_tokens

router = APIRouter(prefix="/api/v1", tags=["tokens"])


@router.post("/tokens", response_model=TokenCreated, status_code=201, summary="Create a token (the secret is in this answer only)")
def create(body: TokenIn, request: Request, _: Principal = Depends(auth.admin)) -> TokenCreated:
    try:
        row, secret = create_token(controller(request).sessions, body.role, body.name, body.node)
    except TokenError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return TokenCreated(**TokenOut.of(row).model_dump(), token=secret)


@router.get("/tokens", response_model=list[TokenOut], summary="Every token (never the secrets)")
def list_all(request: Request, _: Principal = Depends(auth.admin)) -> list[TokenOut]:
    return [TokenOut.of(row) for row in list_tokens(controller(request).sessions)]


@router.delete("/tokens/{token_id}", status_code=204, summary="Revoke a token")
def revoke(token_id: int, request: Request, _: Principal = Depends(auth.admin)) -> Response:
    if not controller(request).tokens.revoke(token_id):
        raise HTTPException(status_code=404, detail=f"no active token {token_id}")
    return Response(status_code=204)

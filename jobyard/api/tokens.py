"""/api/v1/tokens: create, list and revoke API tokens (admin only)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field

from jobyard.api.deps import EngineDep
from jobyard.store.tokens import ApiToken

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=63)
    role: str = Field(description="viewer, operator or admin")
    namespace: str | None = Field(default=None, description="limit the token to one namespace")


class TokenOut(BaseModel):
    name: str
    role: str
    namespace: str | None
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenOut:
        return cls(**vars(token))


class NewTokenOut(TokenOut):
    token: str = Field(description="shown once; only its digest is stored")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=NewTokenOut)
def create_token(body: TokenIn, engine: EngineDep) -> NewTokenOut:
    created, token = engine.tokens.create(body.name, body.role, body.namespace)
    return NewTokenOut(**vars(created), token=token)


@router.get("", response_model=list[TokenOut])
def list_tokens(engine: EngineDep) -> list[TokenOut]:
    return [TokenOut.of(token) for token in engine.tokens.list()]


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(name: str, engine: EngineDep) -> Response:
    engine.tokens.revoke(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

"""The routes of people's confirmations: `POST /v1/inspections/{id}/confirmations` (a quality or admin token; who
is the token's name) and `GET` of them (any token). The inspection row is never changed (confirmations.py).

The API's database role is a reader's by default (SELECT only); taking confirmations needs INSERT on
`verdict_confirmations` too (docs/api.md). Without it a POST is a 503 that says so, and every read goes on."""

# No `from __future__ import annotations`: FastAPI reads the nested dependencies' annotations at run time.

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, HTTPException, Path
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from lineguard.services.results.api.models import Timestamp
from lineguard.services.results.api.tokens import Caller
from lineguard.services.results.confirmations import (
    COMMENT_MAX,
    BadConfirmation,
    UnknownInspection,
    confirm,
    confirmations,
)

CONFIRMING_ROLES = ("quality", "admin")
InspectionId = Annotated[str, Path(min_length=1, max_length=64, description="the inspection's id (a UUIDv7)")]


class ConfirmationIn(BaseModel):
    verdict: Literal["PASS", "REWORK", "FAIL"] = Field(description="the verdict the part truly deserves")
    comment: str = Field(
        "", max_length=COMMENT_MAX, description="why; needed when the verdict is not the line's (an overruling)"
    )


class ConfirmationOut(BaseModel):
    id: int
    inspection_id: str
    verdict: str
    recorded_verdict: str = Field(description="the line's verdict, as recorded (a confirmation never changes it)")
    overrules: bool = Field(description="verdict differs from recorded_verdict")
    confirmed_by: str = Field(description="the name of the token that confirmed")
    confirmed_at: Timestamp
    comment: str


def add_confirmations(
    app: FastAPI, engine: Engine, caller: Callable[..., Caller], errors: dict[int | str, dict[str, Any]]
) -> None:
    """The confirmation routes on `app`, `caller` the API's token check."""

    def confirmer(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.role not in CONFIRMING_ROLES:
            raise HTTPException(
                403, f"confirming a verdict needs a quality or admin token; {who.token_id} is a {who.role}"
            )
        return who

    unknown: dict[int | str, dict[str, Any]] = {404: {"description": "no inspection of that id"}}

    @app.post(
        "/v1/inspections/{inspection_id}/confirmations",
        status_code=201,
        responses={**errors, **unknown, 403: {}, 503: {"description": "the API's database role may not write"}},
        response_model=ConfirmationOut,
    )
    def post_confirmation(
        inspection_id: InspectionId,
        body: Annotated[ConfirmationIn, Body()],
        who: Annotated[Caller, Depends(confirmer)],
    ) -> dict[str, Any]:
        """Confirm or overrule the line's verdict of one inspection, as the token's holder; kept beside the record,
        which stays as the line decided it. The latest confirmation of a part is its truth (the shadow report)."""
        try:
            kept = confirm(engine, inspection_id, body.verdict, who.name, body.comment)
        except UnknownInspection as exc:
            raise HTTPException(404, str(exc)) from None
        except BadConfirmation as exc:
            raise HTTPException(422, [{"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}]) from None
        except DBAPIError as exc:
            cause = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
            raise HTTPException(
                503,
                f"the confirmation was not kept: the database refused the write ({cause}); the API's database role "
                "needs INSERT on verdict_confirmations (docs/api.md)",
            ) from None
        return kept.to_dict()

    @app.get(
        "/v1/inspections/{inspection_id}/confirmations",
        dependencies=[Depends(caller)],
        responses={**errors, **unknown},
        response_model=list[ConfirmationOut],
    )
    def get_confirmations(inspection_id: InspectionId) -> list[dict[str, Any]]:
        """The inspection's confirmations, oldest first: who said which verdict when, and why."""
        try:
            return [c.to_dict() for c in confirmations(engine, inspection_id)]
        except UnknownInspection as exc:
            raise HTTPException(404, str(exc)) from None

"""`/api/v1/models`: the models jobs produced and the base models, with their lineage."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from ainfinity.api.dependencies import CurrentKey, ServingDep
from ainfinity.schema.error import ErrorResponse
from ainfinity.schema.model import Model, ModelList

router = APIRouter(prefix="/models", tags=["models"])

ModelId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=512,
        description="`ft:<base>:<job>`, `ft:<base>:<job>:ckpt-<step>`, or a base model's name.",
        examples=["ft:tiny-random-llama:quickstart"],
    ),
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such model (or not yours)"}
}


@router.get("")
def list_models(
    serving: ServingDep,
    key: CurrentKey,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=1024, description="`next_cursor`")] = None,
) -> ModelList:
    """Models newest first: what your jobs produced (every job's for an admin key) and the
    base models. Pass `next_cursor` as `after` for the next page."""
    page = serving.list_models(caller=key, limit=limit, cursor=after)
    return ModelList(
        data=page.models, has_more=page.next_cursor is not None, next_cursor=page.next_cursor
    )


@router.get("/{model_id}", responses=NOT_FOUND)
def get_model(model_id: ModelId, serving: ServingDep, key: CurrentKey) -> Model:
    """One model, with its lineage, metrics and checkpoint ids."""
    return serving.get_model(model_id, caller=key)


@router.delete(
    "/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "A base model"}},
)
async def delete_model(model_id: ModelId, serving: ServingDep, key: CurrentKey) -> Response:
    """Unregister a fine-tuned model and unload it; its job and files stay."""
    await serving.delete_model(model_id, caller=key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

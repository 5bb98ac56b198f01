"""`/v1/models`, in OpenAI's list and model shapes."""

from __future__ import annotations

from fastapi import APIRouter

from ainfinity.api.dependencies import CurrentKey, ServingDep
from ainfinity.api.v1.models import NOT_FOUND, ModelId
from ainfinity.schema.openai import DeletedModel, OpenAIError, OpenAIModel, OpenAIModelList

router = APIRouter(prefix="/models", tags=["openai"])


@router.get("")
def list_models(serving: ServingDep, key: CurrentKey) -> OpenAIModelList:
    """Every model this key may call, newest first."""
    return serving.openai_models(caller=key)


@router.get("/{model_id}", responses=NOT_FOUND)
def retrieve_model(model_id: ModelId, serving: ServingDep, key: CurrentKey) -> OpenAIModel:
    return serving.openai_model(model_id, caller=key)


@router.delete(
    "/{model_id}",
    responses={**NOT_FOUND, 409: {"model": OpenAIError, "description": "A base model"}},
)
async def delete_model(model_id: ModelId, serving: ServingDep, key: CurrentKey) -> DeletedModel:
    """Unregister a fine-tuned model (its job and files stay)."""
    await serving.delete_model(model_id, caller=key)
    return DeletedModel(id=model_id, deleted=True)

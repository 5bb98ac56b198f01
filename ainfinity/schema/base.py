"""Base models shared by every schema."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Input model: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class PublicModel(BaseModel):
    """Output model."""

    model_config = ConfigDict(extra="ignore")

"""``/v1/models`` wire types; extra fields describe what each local model can do."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    created: int
    object: Literal["model"] = "model"
    owned_by: str


class ListModelsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]

"""The request bodies of the deletion API: pydantic v2, strict types, no extra fields (a wrong type, an extra
field or an empty list is a 422 before anything is looked up)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_PAIRS = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Pair(_Strict):
    user: str = Field(min_length=1, max_length=200)
    item: str = Field(min_length=1, max_length=200)


class DeletionBody(_Strict):
    """Exactly one of a whole user, a whole item, or a list of interactions (raw ids, as strings)."""

    user: str | None = Field(None, min_length=1, max_length=200)
    item: str | None = Field(None, min_length=1, max_length=200)
    interactions: list[Pair] | None = Field(None, min_length=1, max_length=MAX_PAIRS)

    @model_validator(mode="after")
    def _one(self) -> DeletionBody:
        if sum(x is not None for x in (self.user, self.item, self.interactions)) != 1:
            raise ValueError("give exactly one of user, item or interactions")
        return self

    @property
    def kind(self) -> Literal["user", "item", "interactions"]:
        return "user" if self.user is not None else "item" if self.item is not None else "interactions"

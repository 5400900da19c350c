"""The JSON bodies the gateway answers with, as pydantic models: each route
declares its own (``response_model``), so /openapi.json describes every
body and a client generator gets typed responses.

Field names are the REST contract's (docs/API.md). Tag scores are
``[name, score]`` pairs and per-user ratings ``[user, rating]`` pairs, as the
original service sent them. Fields the contract shows as ``null`` are
``X | None`` and always present; the paging fields of /getuserdata are
present only when a page was asked for. Error bodies are
:class:`tagrate_gateway.errors.ErrorBody`.

One module per endpoint group (``library``, ``collection``, ``datasets``,
``models``, ``ops``, ``albums``) and what they share (``common``); the
owned tags' and similar images' models are ``tag_schemas`` and
``similar_schemas`` beside this package.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


# Defined here, not in collection.py: another model is named Neighbour
# (routes/tasteloop.py), so /openapi.json names this one by its module,
# ``tagrate_gateway__schemas__Neighbour``; moving it would rename it there.
class Neighbour(BaseModel):
    """The image before or after, in /getimageneighbours."""

    image: str | None = Field(description="null at the start (prev) or end (next) of the list.")
    rating: float | None = Field(description="The user's rating of it; null when unrated or no image.")

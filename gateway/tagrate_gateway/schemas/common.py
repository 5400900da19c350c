"""What the response models share: the pair and timestamp aliases, and
:func:`serialised` for large bodies sent without validation."""

from __future__ import annotations

from typing import Any

import pydantic_core
from fastapi.responses import Response

TagScore = tuple[str, float]
UserScore = tuple[str, float]
Timestamp = str  # RFC 3339 UTC with a "Z", e.g. "2026-11-26T22:47:41Z"


def serialised(body: dict[str, Any], status_code: int = 200) -> Response:
    """``body`` as a JSON response, serialised once without validating it
    against the route's model. For bodies of up to a thousand items (a
    /getuserdata page), where building and checking a model per item would
    triple the gateway's cost of the answer; the routes' tests check these
    bodies against their models instead."""
    return Response(pydantic_core.to_json(body), status_code=status_code, media_type="application/json")

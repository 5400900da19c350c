"""How the routes describe their multipart bodies in /openapi.json."""

from __future__ import annotations

from typing import Any


def file_property(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "description": description}


def files_property(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string", "format": "binary"}, "description": description}


def text_property(description: str, example: str | None = None) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": "string", "description": description}
    if example is not None:
        prop["example"] = example
    return prop


def multipart_body(properties: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """``openapi_extra`` documenting a multipart/form-data request body (the
    route reads the body itself, so FastAPI cannot infer it)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": properties, "required": required}}
            },
        }
    }

"""/openapi.json is a contract a client generator can use: every success
answer has a typed body, every error answer the error body, required query
parameters are marked required (and still answer the API's 400, not
FastAPI's 422), and docs/API.md documents exactly the endpoints the gateway
serves."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Match

from tagrate_gateway.app import create_app
from tagrate_gateway.config import GatewaySettings

REPO = Path(__file__).resolve().parents[2]
API_MD = REPO / "docs" / "API.md"
# "### GET /getuserdata?user=U..." or "### GET|POST /updatetags[?full=true]"
_HEADING_RE = re.compile(r"^###\s+([A-Z]+(?:\|[A-Z]+)*)\s+(/[A-Za-z0-9_./{}-]*)", re.MULTILINE)


@pytest.fixture(scope="module")
def app() -> FastAPI:
    # Backends are never called here: nothing listens on these addresses.
    return create_app(GatewaySettings(dataset_addr="", tagger_addr="", rater_addr="", trainer_addr=""))


@pytest.fixture(scope="module")
def schema(app: FastAPI) -> dict:
    return app.openapi()


def operations(schema: dict) -> list[tuple[str, str, dict]]:
    return [(method.upper(), path, op) for path, ops in schema["paths"].items() for method, op in ops.items()]


def test_every_success_answer_has_a_typed_body(schema: dict) -> None:
    components = schema["components"]["schemas"]
    for method, path, op in operations(schema):
        successes = {code: answer for code, answer in op["responses"].items() if code in ("200", "202")}
        assert len(successes) == 1, f"{method} {path} documents {sorted(op['responses'])}"
        [answer] = successes.values()
        content = answer.get("content")
        assert content, f"{method} {path}: a success without a body description"
        for media_type, body in content.items():
            body_schema = body.get("schema")
            assert body_schema, f"{method} {path} {media_type}: no schema"
            if media_type != "application/json":
                assert body_schema.get("type") == "string", f"{method} {path} {media_type}"
                continue
            refs = [body_schema] if "$ref" in body_schema else body_schema.get("anyOf", [])
            assert refs and all("$ref" in ref for ref in refs), f"{method} {path}: untyped JSON {body_schema}"
            for ref in refs:
                model = components[ref["$ref"].rsplit("/", 1)[1]]
                if model.get("type") == "array":  # a list the contract fixes (GET /taughttags): of typed items
                    model = components[model["items"]["$ref"].rsplit("/", 1)[1]]
                assert model.get("properties"), f"{method} {path}: {ref} has no fields"


def test_every_error_answer_is_the_error_body(schema: dict) -> None:
    error_body = schema["components"]["schemas"]["ErrorBody"]
    assert set(error_body["required"]) == {"error", "code"}
    for method, path, op in operations(schema):
        assert "422" not in op["responses"], f"{method} {path}: the gateway never answers 422"
        for code, answer in op["responses"].items():
            if code[0] not in "45":
                continue
            ref = answer["content"]["application/json"]["schema"]["$ref"]
            model = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
            assert {"error", "code"} <= set(model["required"]), f"{method} {path} {code}: {ref}"


def test_the_contract_fields_are_required_and_typed(schema: dict) -> None:
    models = schema["components"]["schemas"]
    user_data = models["UserData"]
    assert set(user_data["required"]) == {"user", "images", "total"}  # page fields only with a page
    item = models["UserImage"]
    assert set(item["required"]) == {"image", "rating", "rated_at", "predicted"}  # null, never absent
    assert {"type": "null"} in item["properties"]["rating"]["anyOf"]
    # Tag scores are [name, score] pairs.
    pair = models["TagResult"]["properties"]["tags"]["items"]
    assert pair["prefixItems"] == [{"type": "string"}, {"type": "number"}]
    assert set(models["TrainerStatus"]["required"]) >= {"is_training", "state", "current_user", "last_job"}


@pytest.mark.parametrize(("method", "path"), [("GET", "/getuserdata"), ("GET", "/trainuser")])
def test_user_is_documented_as_required(schema: dict, method: str, path: str) -> None:
    [user] = [p for p in schema["paths"][path][method.lower()]["parameters"] if p["name"] == "user"]
    assert user["required"] is True
    assert user["schema"]["type"] == "string" and "x-tagrate-required" not in user["schema"]


def test_a_missing_required_parameter_is_still_our_400(app: FastAPI) -> None:
    paths = ("/getuserdata", "/trainuser", "/getuserdata?user=")

    async def get_all() -> list[httpx.Response]:
        # Refused before any backend is called.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            return [await http.get(path) for path in paths]

    for path, response in zip(paths, asyncio.run(get_all()), strict=True):
        assert response.status_code == 400, (path, response.text)
        assert response.json() == {"error": "the 'user' parameter is required", "code": "missing_parameter"}


def documented() -> set[tuple[str, str]]:
    text = API_MD.read_text(encoding="utf-8")
    assert "../shared" not in text, "docs/API.md must stand alone"
    return {(method, path) for methods, path in _HEADING_RE.findall(text) for method in methods.split("|")}


def served(app: FastAPI, method: str, path: str) -> bool:
    """Whether a route of the app answers ``method path`` (asked of the
    router itself, as a request would be)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


def test_api_md_documents_every_operation_of_the_schema(schema: dict) -> None:
    missing = {(method, path) for method, path, _ in operations(schema)} - documented()
    assert not missing, f"in /openapi.json but not in docs/API.md: {sorted(missing)}"


def test_every_endpoint_api_md_documents_is_served(app: FastAPI) -> None:
    assert served(app, "GET", "/getuserdata") and not served(app, "POST", "/getuserdata")  # the check can fail
    extra = {(method, path) for method, path in documented() if not served(app, method, path)}
    assert not extra, f"in docs/API.md but not served by the gateway: {sorted(extra)}"

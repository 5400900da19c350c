"""Property-based requests from the gateway's own /openapi.json
(schemathesis), shared by tests/gateway/test_fuzz.py (a bounded budget in
the suite) and ``python -m bench fuzz`` (a larger one on demand).

Every operation is called with generated examples, with and without
credentials, and every answer must be: no 5xx except the documented 503/504
of a backend this stack does not run (the model services) and 507; a status
code the operation documents; a body matching the documented schema; the
documented content type. Each problem is collected with the request that
caused it instead of stopping at the first.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

# Backends this stack leaves unconfigured: their routes answer a documented
# 503 naming the missing service; that is not a server error.
UNCONFIGURED_CODES = frozenset(
    {"tagger_unavailable", "rater_unavailable", "trainer_unavailable", "service_unavailable", "not_configured"}
)


@dataclass
class FuzzResult:
    operations: int = 0
    examples: int = 0
    failures: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


def _server_error(status: int, body: bytes) -> str | None:
    """Why a 5xx is a failure, or None for the allowed ones."""
    if status < 500 or status == 507:
        return None
    if status in (503, 504):
        try:
            code = httpx.Response(status, content=body).json().get("code", "")
        except ValueError:
            code = ""
        if code in UNCONFIGURED_CODES or code.endswith(("_unavailable", "_timeout")):
            return None
    return f"server error {status}: {body[:300]!r}"


def run_fuzz(
    base_url: str,
    schema_doc: dict[str, Any],
    credentials: Iterable[tuple[str, dict[str, str]]],
    max_examples: int,
    skip: Iterable[str] = (),
    derandomize: bool = True,
) -> FuzzResult:
    """Runs ``max_examples`` generated examples of every operation in
    ``schema_doc`` against ``base_url`` once per (label, headers) in
    ``credentials``; operations named in ``skip`` ("METHOD /path") are left
    out. ``derandomize``: the same examples every run (the suite); off, new
    ones each run (the benchmark)."""
    import schemathesis
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_dict(schema_doc)
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    result = FuzzResult()
    skipped = set(skip)
    for label, headers in credentials:
        for found in schema.get_all_operations():
            operation = found.ok()
            name = f"{operation.method.upper()} {operation.path}"
            if name in skipped:
                continue
            result.operations += 1
            _fuzz_operation(operation, name, label, base_url, headers, max_examples, checks, result, derandomize)
    return result


def _fuzz_operation(
    operation: Any,
    name: str,
    label: str,
    base_url: str,
    headers: dict[str, str],
    max_examples: int,
    checks: list[Any],
    result: FuzzResult,
    derandomize: bool = True,
) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    seen: set[str] = set()

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def one(case: Any) -> None:
        result.examples += 1
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        result.statuses[response.status_code] = result.statuses.get(response.status_code, 0) + 1
        problems = []
        error = _server_error(response.status_code, response.content)
        if error:
            problems.append(error)
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a group of check failures
            text = str(exc).strip()
            problems.append(" | ".join(text.splitlines()[:3])[:400] if text else repr(exc))
        for problem in problems:
            key = f"{label} {name}: {problem}"
            if key not in seen:  # one line per distinct problem and operation
                seen.add(key)
                request = f"{case.method} {case.formatted_path} query={case.query!r}"
                result.failures.append(f"{key} [{request[:200]}]")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            one()
        except (Exception, BaseExceptionGroup) as exc:  # a failure reported through Hypothesis itself
            text = str(exc).strip()
            result.failures.append(f"{label} {name}: {' | '.join(text.splitlines()[:6])[:600] or repr(exc)}")

"""Fixtures for the deploy/ checks: each overlay rendered once per session."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import K8S, OVERLAYS, Rendered, kustomize


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    """``kubectl kustomize`` of every overlay, parsed, by overlay name."""
    return {overlay: Rendered(kustomize(K8S / "overlays" / overlay)) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered: dict[str, Rendered]) -> Rendered:
    """Each test using this runs once per overlay."""
    return rendered[request.param]

"""The browser UI's ES modules, checked without a browser: every import
names a module the gateway serves and a name that module exports, no module
grows past the size a reader takes in at once, and nothing in them needs a
looser Content-Security-Policy (no eval, no HTML strings, no inline styles).
With Node.js installed, each module is also parsed as a module."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tagrate_gateway.routes import ui

UI_DIR = ui._UI_DIR
MODULES = sorted(name for name in ui.ASSETS if name.endswith(".js"))
MAX_LINES = 400

IMPORT = re.compile(r"""import\s*(?:\{([^}]*)\}\s*from\s*)?["']([^"']+)["']""", re.S)
DYNAMIC_IMPORT = re.compile(r"""import\(\s*["']([^"']+)["']\s*\)""")
EXPORT = re.compile(r"export\s+(?:async\s+)?(?:function\*?|const|let|class)\s+([A-Za-z_$][\w$]*)")
FORBIDDEN = {
    "innerHTML": re.compile(r"\.(?:inner|outer)HTML\b|insertAdjacentHTML"),
    "eval": re.compile(r"\beval\(|new Function\("),
    "inline style attribute": re.compile(r"""setAttribute\(\s*["']style["']|["']style["']\s*:"""),
    "string timer": re.compile(r"""set(?:Timeout|Interval)\(\s*["'`]"""),
}


def _source(name: str) -> str:
    return (UI_DIR / name).read_text(encoding="utf-8")


def _resolve(importer: str, specifier: str) -> str:
    assert specifier.startswith("./") or specifier.startswith("../"), f"{importer}: bare import {specifier!r}"
    parts = importer.split("/")[:-1]
    for piece in specifier.split("/"):
        if piece == "..":
            parts.pop()
        elif piece != ".":
            parts.append(piece)
    return "/".join(parts)


def test_every_module_is_served_and_the_page_preloads_it():
    assert "app.js" in MODULES and len(MODULES) > 5
    page = ui._PAGE_BYTES.decode()
    for name in MODULES:
        if name != "app.js":
            assert f'<link rel="modulepreload" href="ui/{name}">' in page, name
    assert 'src="ui/app.js"' in page and "<script>" not in page


@pytest.mark.parametrize("name", MODULES)
def test_imports_resolve_to_exported_names(name):
    text = _source(name)
    for names, specifier in IMPORT.findall(text):
        target = _resolve(name, specifier)
        assert target in ui.ASSETS, f"{name} imports {specifier}, which the gateway does not serve"
        exported = set(EXPORT.findall(_source(target)))
        for imported in (n.strip().split(" as ")[0] for n in names.split(",") if n.strip()):
            assert imported in exported, f"{name} imports {imported!r} from {specifier}, which does not export it"
    for specifier in DYNAMIC_IMPORT.findall(text):
        target = _resolve(name, specifier)
        assert target in ui.ASSETS, f"{name} imports {specifier}, which the gateway does not serve"
        assert "render" in EXPORT.findall(_source(target)), f"{target} is a screen without render()"


@pytest.mark.parametrize("name", MODULES)
def test_modules_stay_small_and_csp_clean(name):
    text = _source(name)
    lines = text.count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it (at most {MAX_LINES})"
    for what, pattern in FORBIDDEN.items():
        assert not pattern.search(text), f"{name} uses {what}, which the page's policy forbids or invites"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed: modules not parsed")
@pytest.mark.parametrize("name", MODULES)
def test_modules_parse(name):
    result = subprocess.run(
        ["node", "--experimental-default-type=module", "--check", str(UI_DIR / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

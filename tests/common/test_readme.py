"""The README is a first page (what tagrate is, the two commands, first
steps, links) and the reference lives in docs/: the configuration tables
there are generated from the settings classes and must match them, every
docs/ page is linked from the README, and no link points nowhere."""

from __future__ import annotations

import re
from pathlib import Path

from tagrate_common import settings_doc
from tests.support import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
MAX_README_LINES = 250
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_the_configuration_page_lists_every_environment_variable_with_its_default():
    assert settings_doc.PAGE == DOCS / "configuration.md"
    assert settings_doc.page_section() == settings_doc.render(), (
        "docs/configuration.md's tables are out of date: run `python -m tagrate_common.settings_doc --write`"
    )


def test_the_readme_is_short_and_starts_with_what_to_do():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; the reference belongs in docs/"
    assert "make run" in text and "make test" in text
    # The first steps come before any reference: within the first 120 lines.
    head = "\n".join(lines[:120])
    for step in ("http://127.0.0.1:8000", "tagrate import", "For you", "TAGGER_MODEL_DIR"):
        assert step in head, step
    assert "docs/images/ui.png" in head and (DOCS / "images" / "ui.png").is_file()
    assert settings_doc.BEGIN not in text  # the tables moved to docs/configuration.md


def _slug(title: str) -> str:
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    found: set[str] = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        heading = re.match(r"#+ (.*)", line)
        if heading:
            found.add(_slug(heading.group(1)))
        found.update(re.findall(r'<a (?:name|id)="([^"]+)"', line))
    return found


def _broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("/"):
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path) if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
            broken.append(f"{target}: no heading #{anchor}")
    return broken


def test_every_docs_page_is_linked_from_the_readme_and_no_link_is_broken():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in LINK.findall(README.read_text())}
    pages = sorted(DOCS.glob("*.md"))
    assert len(pages) >= 10
    unlinked = [page.name for page in pages if page.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
    broken = {page.name: _broken_links(page) for page in [README, *pages]}
    assert not {name: links for name, links in broken.items() if links}

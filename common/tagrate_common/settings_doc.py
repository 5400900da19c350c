"""Renders every environment variable tagrate reads as Markdown tables, one
per settings class, for the configuration page (docs/configuration.md).

    python -m tagrate_common.settings_doc            print the tables
    python -m tagrate_common.settings_doc --write    update docs/configuration.md between the markers

A test fails when docs/configuration.md and the settings classes disagree,
so the page can never silently fall behind the code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from pathlib import Path

from pydantic_settings import BaseSettings

from .config import CommonSettings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"

# (title, module, class) in the order the page shows them; absent services are skipped.
SETTINGS_CLASSES = [
    ("Every process", "tagrate_common.config", "CommonSettings"),
    ("make run (supervisor)", "tagrate_common.supervisor", "SupervisorSettings"),
    ("gateway", "tagrate_gateway.config", "GatewaySettings"),
    ("dataset-service", "tagrate_dataset.config", "DatasetSettings"),
    ("tagger-service", "tagrate_tagger.config", "TaggerSettings"),
    ("rater-service", "tagrate_rater.config", "RaterSettings"),
    ("trainer-service", "tagrate_trainer.config", "TrainerSettings"),
]


def env_name(cls: type[BaseSettings], field: str) -> str:
    info = cls.model_fields[field]
    if isinstance(info.validation_alias, str):
        return info.validation_alias
    return (cls.model_config.get("env_prefix", "") + field).upper()


def _default(cls: type[BaseSettings], field: str) -> str:
    info = cls.model_fields[field]
    if info.default_factory is not None:
        return "(derived)"
    value = info.default
    if value is None:
        return "(derived)" if "derived" in (info.description or "").lower() else "unset"
    return f"`{value}`" if value != "" else '`""`'


def render() -> str:
    out: list[str] = []
    for title, module, name in SETTINGS_CLASSES:
        if importlib.util.find_spec(module.split(".")[0]) is None:
            continue
        cls = getattr(importlib.import_module(module), name)
        own = [f for f in cls.model_fields if cls is CommonSettings or f not in CommonSettings.model_fields]
        if not own:
            continue
        out += [f"**{title}**", "", "| variable | default | meaning |", "| --- | --- | --- |"]
        for field in own:
            description = (cls.model_fields[field].description or "").replace("|", "\\|")
            out.append(f"| `{env_name(cls, field)}` | {_default(cls, field)} | {description} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def page_section() -> str:
    """The tables the page holds now, between the markers."""
    text = PAGE.read_text()
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip("\n") + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/configuration.md in place")
    args = parser.parse_args()
    tables = render()
    if not args.write:
        print(tables, end="")
        return
    text = PAGE.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    PAGE.write_text(f"{head}{BEGIN}\n{tables}{END}{tail}")


if __name__ == "__main__":
    main()

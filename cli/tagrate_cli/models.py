"""``tagrate models``: bring your own tagger. ``add DIR`` has the server
check and register a WD v3 / DeepDanbooru ONNX model folder, ``list``
shows the registered models, ``use ID`` makes one the tagger's model (every
stored image is then re-tagged in the background; ``tagrate status`` and
/verifydatasets show the progress). Over the gateway's /taggermodels, as an
admin: DIR is a folder on the server's machine (the same machine for a
local ``make run``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .client import Api, ApiError

# Checking or switching loads the model and runs images through it.
MODEL_CALL_TIMEOUT = 600.0


def _api(ctx: click.Context) -> Api:
    root = ctx.find_root().obj
    return Api(root["url"], root["token"], max(root["timeout"], MODEL_CALL_TIMEOUT), 1)


def _call(ctx: click.Context, method: str, path: str, **kwargs: Any) -> Any:
    with _api(ctx) as api:
        try:
            return api.request(method, path, retries=0 if method == "POST" else 2, **kwargs).json()
        except ApiError as exc:
            raise click.ClickException(str(exc)) from exc


def _describe(model: dict[str, Any]) -> str:
    categories = ", ".join(f"{n} {c}" for c, n in model["categories"].items())
    thresholds = ", ".join(f"{c} {t:g}" for c, t in model["thresholds"].items())
    return (
        f"{model['model']}  {model['format']}, {model['labels']} tags ({categories}), "
        f"input {model['input_size']}px, thresholds: {thresholds}"
    )


@click.group("models")
def models_group() -> None:
    """Bring your own tagger: register WD v3 / DeepDanbooru ONNX models and switch the tagger to one."""


@models_group.command("add")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def add_command(ctx: click.Context, directory: Path) -> None:
    """Check the model folder DIRECTORY and register it (an id to `use`).

    A WD v3 folder holds model.onnx and selected_tags.csv; a DeepDanbooru
    one model.onnx and tags.txt (tags-character.txt optional). An optional
    thresholds.json sets per-category thresholds. The folder is read by the
    server: give a path on the server's machine.
    """
    path = str(directory.expanduser().absolute())
    body = _call(ctx, "POST", "/taggermodels", data={"path": path})
    click.echo(("registered " if body["added"] else "already registered ") + _describe(body["model"]))
    click.echo(f"make it the tagger's model with: tagrate models use {body['model']['model']}")


@models_group.command("list")
@click.pass_context
def list_command(ctx: click.Context) -> None:
    """The registered models; * marks the tagger's."""
    body = _call(ctx, "GET", "/taggermodels")
    default_mark = "*" if body["active"] == "default" else " "
    click.echo(f"{default_mark} default  the embedded EfficientNet-Lite0 ImageNet tagger")
    for model in body["models"]:
        click.echo(("* " if model["model"] == body["active"] else "  ") + _describe(model))
    if body["running"] and body["active"] != "default" and body["running"] != body["active"]:
        click.echo(f"note: the tagger runs {body['running']} (TAGGER_MODEL_DIR pins it)")


@models_group.command("use")
@click.argument("model_id")
@click.pass_context
def use_command(ctx: click.Context, model_id: str) -> None:
    """Make MODEL_ID (from `tagrate models list`, or `default`) the tagger's model.

    The tagger loads it and swaps it in; every stored image is then
    re-tagged in the background (progress: `tagrate status`).
    """
    body = _call(ctx, "POST", "/taggermodels/use", data={"model": model_id})
    click.echo(f"the tagger now runs {body['model']} ({body['labels']} tags); stored images are re-tagged in the")
    click.echo("background: `tagrate status` or /verifydatasets (work.tag.pending) shows how many are left")

"""The ``tagrate`` command: subcommands over the gateway's REST API."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .client import Api, ApiError, Unreachable
from .importer import Summary, learn_known, run_import
from .models import models_group
from .sources import BadRatingsFile, valid_user

# The gateway `make run` starts: port 8000, or TAGRATE_RUN_BASE_PORT when set
# (it moves the whole group, the gateway at the base port itself).
GATEWAY_PORT = 8000
# Exit status when no server answers at the URL (before any work is done).
EXIT_UNREACHABLE = 3


def default_url() -> str:
    """TAGRATE_URL, else the gateway of a local `make run` (its base port)."""
    url = os.environ.get("TAGRATE_URL", "").strip()
    if url:
        return url
    base = os.environ.get("TAGRATE_RUN_BASE_PORT", "").strip()
    port = int(base) if base.isdigit() and 0 < int(base) < 65536 else GATEWAY_PORT
    return f"http://127.0.0.1:{port}"


# Eight uploads in flight keep a small server's cores busy: much of an
# upload's time is spent waiting for the disk (the blob's and the
# database's fsyncs), which other uploads fill. `python -m bench import` on
# two cores: -j 8 about 1.3-1.4x the images/s of -j 4, -j 16 no faster.
DEFAULT_CONCURRENCY = 8


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    default=default_url,
    show_default="TAGRATE_URL, else http://127.0.0.1:8000 or the port TAGRATE_RUN_BASE_PORT gives make run",
    help="The gateway's base URL.",
)
@click.option("--token", envvar="TAGRATE_TOKEN", default=None, help="Bearer token (env TAGRATE_TOKEN).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for one request.")
@click.pass_context
def cli(ctx: click.Context, url: str, token: str | None, timeout: float) -> None:
    """tagrate: import a collection into a tagrate server, export it, and show its state.

    Talks to a running gateway over its public REST API only, so it works
    against a remote server too.
    """
    ctx.obj = {"url": url, "token": token, "timeout": timeout}


def _api(ctx: click.Context, connections: int = 8) -> Api:
    return Api(ctx.obj["url"], ctx.obj["token"], ctx.obj["timeout"], connections)


def _reachable(ctx: click.Context, api: Api) -> None:
    """Stops the command with one error and EXIT_UNREACHABLE when no server
    answers at the URL: before any work, rather than a failure per file."""
    try:
        api.check_reachable()
    except Unreachable as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(EXIT_UNREACHABLE)


def _check_user(user: str | None) -> None:
    if user is not None and not valid_user(user):
        message = f"{user!r} is not a user name (1-64 of [A-Za-z0-9_.-], not 'all')"
        raise click.BadParameter(message, param_hint="--user")


def _report(summary: Summary, summary_json: Path | None) -> int:
    """Prints the summary; 1 when anything failed or a row was skipped."""
    out = click.echo
    out(f"images: {summary.images_added} added, {summary.images_existing} already there")
    out(
        f"ratings: {summary.ratings_added} added, {summary.ratings_changed} changed, "
        f"{summary.ratings_existing} already there"
    )
    if summary.not_images:
        out(f"not images, skipped ({len(summary.not_images)}): {', '.join(sorted(summary.not_images)[:20])}")
    for note in summary.notes:
        out(f"note: {note}")
    if summary.near_duplicates:
        out(
            f"near-duplicates of stored images ({len(summary.near_duplicates)}; both kept, review them on the "
            "Duplicates screen or with /getduplicates):"
        )
        for where, image, other in sorted(summary.near_duplicates)[:20]:
            out(f"  {where} ({image}) looks like {other}")
    if summary.skipped_rows:
        out(f"rows skipped ({len(summary.skipped_rows)}):")
        for problem in summary.skipped_rows:
            out(f"  {problem.where}: {problem.reason}")
    if summary.failed:
        out(f"failed ({len(summary.failed)}):")
        for problem in sorted(summary.failed, key=lambda p: p.where):
            out(f"  {problem.where}: {problem.reason}")
    if summary_json:
        summary_json.write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return 1 if summary.failed or summary.skipped_rows else 0


concurrency_option = click.option(
    "--concurrency",
    "-j",
    type=click.IntRange(1, 64),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at once.",
)
summary_option = click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the summary to this file as JSON.",
)


@cli.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--ratings",
    "ratings_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV (header path,user,rating[,source]) or JSON Lines file; paths relative to DIRECTORY.",
)
@click.option("--user", help="The user of --rating-from-folder, and of ratings-file rows without a user.")
@click.option(
    "--rating-from-folder",
    is_flag=True,
    help="Rate each image by its top folder under DIRECTORY: 0..6 (sixths), or decimals 0.0-1.0.",
)
@concurrency_option
@summary_option
@click.pass_context
def import_command(
    ctx: click.Context,
    directory: Path,
    ratings_file: Path | None,
    user: str | None,
    rating_from_folder: bool,
    concurrency: int,
    summary_json: Path | None,
) -> None:
    """Import every image under DIRECTORY (recursively) with its ratings.

    Images without a rating are stored unrated; a tagrate export's
    albums.jsonl in DIRECTORY makes its albums again. Resumable: run it again
    after an interruption and only what is missing is sent (image names are
    content hashes). Exit status 1 when a row was skipped or an image failed.
    """
    from .albums import ALBUMS_FILE, restore_albums
    from .folder import folder_items

    _check_user(user)
    if rating_from_folder and not user:
        raise click.UsageError("--rating-from-folder needs --user")
    summary = Summary()
    try:
        items = folder_items(directory, ratings_file, user, rating_from_folder, summary)
    except BadRatingsFile as exc:
        raise click.BadParameter(str(exc), param_hint="--ratings") from exc
    users = {u for item in items for u in item.ratings}
    with _api(ctx, concurrency) as api:
        _reachable(ctx, api)
        try:
            known = learn_known(api, users)
            run_import(api, items, len(items), known, summary, concurrency, "importing")
            if (directory / ALBUMS_FILE).is_file():
                restore_albums(api, directory / ALBUMS_FILE, summary)
        except ApiError as exc:
            raise click.ClickException(str(exc)) from exc
    ctx.exit(_report(summary, summary_json))


@cli.command("import-original")
@click.option("--database", required=True, help="The original service's PostgreSQL URL (postgresql://...).")
@click.option(
    "--user-name",
    type=click.Choice(["discord_id", "username"]),
    default="discord_id",
    show_default=True,
    help="Which column names a user here (discord_id falls back to username where it is empty).",
)
@concurrency_option
@summary_option
@click.pass_context
def import_original_command(
    ctx: click.Context, database: str, user_name: str, concurrency: int, summary_json: Path | None
) -> None:
    """Migrate the original service's images, ratings, sources and montage posts from its PostgreSQL database.

    The 768-pixel JPEG is the image, sankaku_id its source; each montage
    post becomes an album of its user with its original time. The
    original's own tags are not copied: images are tagged again here by
    this server's tagger. Resumable like `tagrate import`.
    """
    from .albums import import_original_posts

    try:
        from .original import OriginalDatabase
    except ImportError as exc:  # psycopg: an optional dependency of the installed command
        raise click.ClickException(
            f"import-original needs psycopg ({exc}): pip install 'tagrate-cli[original]' (or 'psycopg[binary]')"
        ) from exc

    summary = Summary()
    with _api(ctx, concurrency) as api:
        _reachable(ctx, api)
    with OriginalDatabase(database, user_name) as original, _api(ctx, concurrency) as api:
        summary.skipped_rows.extend(original.problems)
        try:
            known = learn_known(api, original.users())
            run_import(api, original.items(), original.image_count(), known, summary, concurrency, "migrating")
            reported = len(original.problems)
            import_original_posts(api, original.montage_posts(summary.stored), summary)
            summary.skipped_rows.extend(original.problems[reported:])  # posts of users without a usable name
        except ApiError as exc:
            raise click.ClickException(str(exc)) from exc
    ctx.exit(_report(summary, summary_json))


@cli.command("export")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--user", help="Only this user's ratings (default: every user).")
@click.option("--images", "with_images", is_flag=True, help="Also download every image file into OUT/images/.")
@click.option(
    "--format",
    "formats",
    type=click.Choice(["jsonl", "csv"]),
    multiple=True,
    default=("jsonl", "csv"),
    show_default=True,
    help="File formats to write (repeat for both).",
)
@concurrency_option
@click.pass_context
def export_command(
    ctx: click.Context, out: Path, user: str | None, with_images: bool, formats: tuple[str, ...], concurrency: int
) -> None:
    """Export ratings, tags with scores, predictions and sources into the folder OUT.

    OUT/ratings.{jsonl,csv}: one row per rating (path,user,rating,source,
    image,rated_at,predicted) and one per unrated image (empty user and
    rating); OUT/images.jsonl: each image's tags with scores, tagger model
    and source; OUT/predictions.jsonl: predictions for unrated images;
    OUT/albums.jsonl: the albums with their images in order. With --images,
    `tagrate import OUT --ratings OUT/ratings.csv` into an empty server
    restores the ratings, images, sources and albums.
    """
    from .albums import export_albums, write_albums
    from .export import export

    _check_user(user)
    with _api(ctx, concurrency) as api:
        _reachable(ctx, api)
        try:
            counts = export(api, out, user, with_images, formats, concurrency)
            albums = export_albums(api, user)
        except ApiError as exc:
            raise click.ClickException(str(exc)) from exc
    write_albums(out, albums)
    click.echo(
        f"exported {counts['ratings']} ratings of {counts['users']} users, {counts['images']} images"
        + (f" ({counts['files']} files)" if with_images else "")
        + f", {len(albums)} albums into {out}"
    )


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the collected state as JSON instead.")
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """One screen: readiness, users, images, untagged, models up to date, the trainer.

    Exit status 1 when the server is not ready or refused the token (401).
    """
    from .status import collect, render

    with _api(ctx) as api:
        state = collect(api)
    if as_json:
        click.echo(json.dumps(state, indent=2))
    else:
        render(state)
    ctx.exit(0 if state["ready"] and not state.get("unauthorized") else 1)


cli.add_command(models_group)


def main(argv: list[str] | None = None) -> int:
    """Runs the command and exits with its status (click's standalone mode)."""
    return cli.main(args=argv, prog_name="tagrate")

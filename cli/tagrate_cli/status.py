"""``tagrate status``: the server's state on one screen."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from .client import Api, ApiError


def _get(api: Api, path: str, **params: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON of a GET, or None and why (a missing backend is a 503)."""
    body, error = _get_or_error(api, path, **params)
    return body, None if error is None else str(error)


def _get_or_error(api: Api, path: str, **params: Any) -> tuple[dict[str, Any] | None, ApiError | None]:
    try:
        return api.get_json(path, retries=0, **params), None
    except ApiError as exc:
        return None, exc


def collect(api: Api) -> dict[str, Any]:
    """Readiness (/readyz), users and models (/verifydatasets), the stored
    image count (a one-item page of /getuserdata rated=all) and the
    trainer's state (/trainerstatus). ``unauthorized`` says why when the
    gateway refused the credentials (401): nothing past readiness is known."""
    # No retries: a status shows the server as it is now, at once.
    try:
        response = api.request("GET", "/readyz", ok=(200, 503), retries=0)
    except ApiError as exc:
        return {"url": api.url, "ready": False, "error": str(exc)}
    readiness = response.json()
    datasets, datasets_failure = _get_or_error(api, "/verifydatasets")
    datasets_error = None if datasets_failure is None else str(datasets_failure)
    unauthorized = datasets_error if datasets_failure is not None and datasets_failure.status == 401 else None
    users = (datasets or {}).get("users", [])
    images = None
    # A user token may list only its own user's images; an admin (or no access control) any user's.
    who, _ = _get(api, "/whoami") if datasets is not None else (None, None)
    own = (who or {}).get("user") if who and not who.get("admin") else None
    counted = own or (users[0]["user"] if users else None)
    if counted is not None:
        page, _ = _get(api, "/getuserdata", user=counted, rated="all", page=1, limit=1)
        images = page["total"] if page else None
    trainer, trainer_error = _get(api, "/trainerstatus")
    return {
        "url": api.url,
        "ready": bool(readiness.get("ready")),
        "unauthorized": unauthorized,
        "services": readiness.get("services", {}),
        "users": users,
        "images": images,
        "untagged_images": (datasets or {}).get("untagged_images"),
        "pending_predictions": (datasets or {}).get("pending_predictions"),
        "work": (datasets or {}).get("work", {}),
        "models_valid": (datasets or {}).get("valid"),
        "datasets_error": datasets_error,
        "trainer": (trainer or {}).get("status"),
        "trainer_error": trainer_error,
    }


def _trainer_line(trainer: dict[str, Any] | None, error: str | None) -> str:
    if trainer is None:
        return f"unavailable ({error})"
    line = trainer.get("state", "?")
    if trainer.get("is_training"):
        line += f" {trainer.get('current_user')}: {100 * (trainer.get('progress') or 0):.1f}%"
        if trainer.get("epochs"):
            line += f", epoch {trainer.get('epoch')}/{trainer.get('epochs')}"
        if trainer.get("eta_seconds") is not None:
            line += f", about {trainer['eta_seconds']:.0f} s left"
    last = trainer.get("last_job")
    if last:
        line += f"; last: {last.get('user')} {last.get('outcome', '')}".rstrip()
    return line


def render(state: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    if "error" in state:
        console.print(f"[bold]{state['url']}[/bold]  [red]unreachable[/]: {state['error']}")
        return
    services = ", ".join(f"{name} {status}" for name, status in sorted(state["services"].items()))
    ready = "[green]ready[/]" if state["ready"] else "[red]NOT READY[/]"
    console.print(f"[bold]{state['url']}[/bold]  {ready}  {services}")
    if state.get("unauthorized"):
        console.print(f"[red]not signed in[/]: {state['unauthorized']}")
        return
    if state["datasets_error"]:
        console.print(f"datasets: unavailable ({state['datasets_error']})")
    else:
        images = "?" if state["images"] is None else state["images"]
        line = f"images: {images}   untagged: {state['untagged_images']}"
        if state["pending_predictions"] is not None:
            line += f"   predictions pending: {state['pending_predictions']}"
        failed = sum(w.get("failed", 0) for w in state["work"].values())
        if failed:
            line += f"   [red]failed work: {failed}[/]"
        console.print(line)
        up_to_date = sum(1 for u in state["users"] if u.get("model_up_to_date"))
        console.print(f"users: {len(state['users'])}   models up to date: {up_to_date}/{len(state['users'])}")
    console.print(f"trainer: {_trainer_line(state['trainer'], state['trainer_error'])}")
    if state["users"]:
        table = Table("user", "ratings", "model up to date", "trained on", "trained at", "last rating")
        for user in state["users"]:
            table.add_row(
                user["user"],
                str(user.get("ratings")),
                "yes" if user.get("model_up_to_date") else "no",
                "-" if user.get("trained_on_ratings") is None else str(user["trained_on_ratings"]),
                user.get("trained_at") or "-",
                user.get("last_rating_at") or "-",
            )
        console.print(table)

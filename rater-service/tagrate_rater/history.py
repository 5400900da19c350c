"""Model history (issue 26): every kept version of a subject's head with
its metadata, and serving a chosen one (ListHeadVersions, UseHeadVersion).

The versions are the head files the store keeps (``keep_head_versions``,
newest first). Choosing one writes the subject's pin (``pins.py``), makes
that head live here at once and rewrites ``GENERATION``, so other replicas
sharing the store serve it at their next reload; the next publish for the
subject removes the pin and the new head serves."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tagrate_common import validation
from tagrate_common.errors import NotFound

from .headfile import HeadFileError, head_files
from .heads import HeadInfo, LoadedHead
from .pins import pin
from .store import HeadStore, subject_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Version:
    info: HeadInfo
    serving: bool


def _loaded(store: HeadStore, subject: str) -> list[tuple[str, LoadedHead]]:
    folder = subject_key(subject)
    found = []
    for name in head_files(store.folder_names(folder)):
        try:
            head = store.read(folder, name)
        except HeadFileError as exc:
            log.warning("skipping head file %s/%s: %s", folder, name, exc)
            continue
        if head is not None and head.info.user == subject:
            found.append((name, head))
    return found


def versions(store: HeadStore, user: str) -> list[Version]:
    """The kept versions of ``user``'s head (``all``: the global head) made
    for the current extractor, newest first, and which one serves."""
    subject = validation.user_name(user, allow_all=True)
    live = store.live.get(subject)
    serving = live.info.version if live is not None else None
    return [Version(head.info, head.info.version == serving) for _, head in _loaded(store, subject)]


def use(store: HeadStore, user: str, version: str) -> HeadInfo:
    """Serves the kept ``version`` of ``user``'s head. NotFound when no kept
    head file of theirs has that version."""
    subject = validation.user_name(user, allow_all=True)
    if not version:
        raise validation.missing("version")
    folder = subject_key(subject)
    chosen = next(((name, head) for name, head in _loaded(store, subject) if head.info.version == version), None)
    if chosen is None:
        raise NotFound(f"'{subject}' has no kept model version '{version[:200]}'", "version_not_found")
    name, head = chosen
    with store._lock:
        pin(store.objects, folder, name)
        store._newest[folder] = ""  # the next reload reads the folder again
        store.live = store.live.with_heads([head])
        store.mark_changed(f"{folder}/{name}")
    log.info("serving %s head %s for %s (chosen from its history)", head.info.kind, version, subject)
    return head.info

"""What both ends of a tagrate gRPC call agree on: the call metadata a
caller sets and a servicer reads, the message size options of a channel and
a server, and the internal-call secret this process sends.

``grpc_client`` (the caller's side) and ``grpc_server`` (the servicer's
side) both import this module and never each other (import-linter's
``grpc-client-server-independent`` contract).
"""

from __future__ import annotations

from typing import Any

# Call metadata a caller sets to "background" for work no person waits on
# (the dataset service's imports): model services then batch it behind
# interactive calls. Absent or anything else: foreground.
PRIORITY_HEADER = "tagrate-priority"

# Call metadata carrying the internal-call secret (TAGRATE_INTERNAL_TOKEN).
INTERNAL_TOKEN_HEADER = "tagrate-internal-token"


def grpc_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


# The internal-call secret this process sends with every call (None: none).
# Process-wide like the settings it comes from: set once at start by the
# process's GrpcServer or the gateway's create_app (see use_internal_token).
_internal_token: str | None = None


def use_internal_token(token: str | None) -> None:
    """Every later call of every client in this process carries ``token``
    (TAGRATE_INTERNAL_TOKEN); None sends none."""
    global _internal_token
    _internal_token = token


def internal_token() -> str | None:
    """The secret this process's calls carry (see :func:`use_internal_token`)."""
    return _internal_token

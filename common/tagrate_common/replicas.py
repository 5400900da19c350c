"""``TAGRATE_RUN_REPLICAS=N``: what ``make run`` needs to start N processes
of every backend service on one machine.

Replica k (0-based) of a service listens on its port plus ``k *
REPLICA_PORT_STRIDE`` (and its metrics port likewise), so replica 0 keeps
the ports of a single-process run and the group's ports never overlap
(one group uses offsets 0..8). Every peer, and the gateway, gets the list
of all replicas' addresses (``127.0.0.1:50051,127.0.0.1:50061``), which
:func:`tagrate_common.grpc_client.channel_target` turns into one
round-robin channel.

What the data layout needs: the replicas share ``TAGRATE_DATA_DIR`` (blobs,
rating heads) and one database. SQLite allows one writing process at a time
per file and the dataset service's work queue is claimed with ``FOR UPDATE
SKIP LOCKED``, so more than one replica needs PostgreSQL; the trainer
replicas share their job queue in it too (see ``tagrate_trainer.claims``).
"""

from __future__ import annotations

import json
import socket

REPLICA_PORT_STRIDE = 10

# Where a target may name several replicas (a list, or a dns:/// name), a
# call refused with UNAVAILABLE (the replica died or is restarting) is tried
# again on the next one, twice at most, within the call's deadline. Calls a
# replica answered with anything else are never retried. A retried write is
# one the dead replica may have committed: tagrate's writes are idempotent
# upserts (same image, same rating) or content-addressed, so doing one twice
# gives the same result.
REPLICA_RETRIES = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


def replicated(target: str) -> bool:
    """Whether ``target`` may name several replicas."""
    return target.startswith(("ipv4:///", "ipv6:///", "dns:"))


def channel_target(addr: str) -> str:
    """The gRPC target for a configured address: ``host:port`` and URIs
    (``dns:///svc:50051``) as they are; a comma-separated list of
    ``host:port`` (the replicas ``make run`` starts) becomes one
    ``ipv4:///`` (or ``ipv6:///``) target naming every address, which
    round_robin spreads calls over, skipping one that is down."""
    parts = [part.strip() for part in addr.split(",") if part.strip()]
    if len(parts) < 2:
        return addr.strip()
    addresses = []
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{part!r} in {addr!r} is not host:port")
        family = 0 if not host.startswith("[") else socket.AF_INET6
        resolved = socket.getaddrinfo(host.strip("[]"), int(port), family, socket.SOCK_STREAM)[0]
        addresses.append((resolved[0], resolved[4][0], int(port)))
    if all(family == socket.AF_INET for family, _, _ in addresses):
        return "ipv4:///" + ",".join(f"{ip}:{port}" for _, ip, port in addresses)
    return "ipv6:///" + ",".join(
        f"[{ip}]:{port}" if family == socket.AF_INET6 else f"[::ffff:{ip}]:{port}" for family, ip, port in addresses
    )


def replica_name(service: str, index: int, count: int) -> str:
    """``tagger`` for a single process, ``tagger1``, ``tagger2``... for replicas."""
    return service if count == 1 else f"{service}{index + 1}"


def replica_port(port: int, index: int) -> int:
    """The port replica ``index`` listens on (0 stays 0: disabled or free)."""
    return port + index * REPLICA_PORT_STRIDE if port else 0


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


def replica_databases(count: int, dataset_url: str, trainer_url: str, trainer_url_set: bool) -> dict[str, str]:
    """Extra environment for ``count`` replicas: nothing for one; else the
    trainer's jobs database defaults to the dataset's PostgreSQL database.
    Raises ValueError saying what to set when the layout cannot work."""
    if count == 1:
        return {}
    if not is_postgres(dataset_url):
        raise ValueError(
            f"TAGRATE_RUN_REPLICAS={count} needs the dataset database on PostgreSQL: replicas cannot share one "
            "SQLite file. Set DATABASE_URL=postgresql+psycopg://user@host/db (or TAGRATE_RUN_REPLICAS=1)"
        )
    if trainer_url_set and not is_postgres(trainer_url):
        raise ValueError(
            f"TAGRATE_RUN_REPLICAS={count} needs the trainer's jobs database on PostgreSQL; unset "
            "TRAINER_DATABASE_URL (the dataset's database is used) or point it at PostgreSQL"
        )
    return {} if trainer_url_set else {"TRAINER_DATABASE_URL": dataset_url}

"""``python -m tagrate_gateway.tokens``: manage access tokens from a shell
that can reach the dataset service (the first admin token of an install).

    python -m tagrate_gateway.tokens create --admin [--expires-in SECONDS]
    python -m tagrate_gateway.tokens create --user alice [--expires-in SECONDS]
    python -m tagrate_gateway.tokens list
    python -m tagrate_gateway.tokens revoke ID

It reads the gateway's settings (GATEWAY_DATASET_ADDR, TAGRATE_INTERNAL_TOKEN
or its file), so run it where the gateway runs (``kubectl exec deploy/gateway
-- python -m tagrate_gateway.tokens create --admin``). The secret is printed
once; only its SHA-256 hash is stored.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys

from tagrate_common.errors import TagrateError
from tagrate_common.grpc_client import Backend, use_internal_token
from tagrate_common.protos import tokens_pb2, tokens_pb2_grpc
from tagrate_common.timestamps import optional_api_text

from .auth import token_digest
from .config import GatewaySettings

TOKEN_PREFIX = "tr_"
TOKEN_BYTES = 32  # 256 random bits


def new_secret() -> str:
    """A fresh token: the prefix lets secret scanners recognise a leak."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def _token_json(token: tokens_pb2.AccessToken) -> dict[str, object]:
    return {
        "id": token.id,
        "user": token.user if token.HasField("user") else None,
        "admin": token.admin,
        "created_at": optional_api_text(token, "created_at"),
        "expires_at": optional_api_text(token, "expires_at"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tagrate_gateway.tokens", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a token and print it (once)")
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument("--admin", action="store_true", help="an admin token")
    scope.add_argument("--user", help="a token that acts only as this user")
    create.add_argument("--expires-in", type=int, default=0, help="seconds until it stops working (default: never)")
    commands.add_parser("list", help="list tokens (never their secrets)")
    revoke = commands.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id")
    args = parser.parse_args(argv)

    settings = GatewaySettings()
    use_internal_token(settings.internal_token_value())
    dataset = Backend(
        "dataset",
        settings.dataset_addr,
        tokens_pb2_grpc.TokenServiceStub,
        settings.dataset_timeout_seconds,
        settings.max_message_bytes,
    )
    try:
        if args.command == "create":
            secret = new_secret()
            reply = dataset.stub.CreateToken(
                tokens_pb2.CreateTokenRequest(
                    token_sha256=token_digest(secret),
                    user=args.user or "",
                    admin=args.admin,
                    expires_in_seconds=max(0, args.expires_in),
                )
            )
            print(json.dumps({**_token_json(reply), "token": secret}))
        elif args.command == "list":
            for token in dataset.stub.ListTokens(tokens_pb2.ListTokensRequest()).tokens:
                print(json.dumps(_token_json(token)))
        else:
            dataset.stub.RevokeToken(tokens_pb2.RevokeTokenRequest(id=args.id))
            print(json.dumps({"success": True, "id": args.id}))
    except TagrateError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        dataset.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Gateway settings: every environment variable the gateway reads
(``GATEWAY_*``, plus the shared ``TAGRATE_*`` ones)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from tagrate_common.config import DEFAULT_PORTS, CommonSettings

KiB = 1024

# The backends the gateway routes to, in the order /readyz reports them.
BACKENDS = ("dataset", "tagger", "rater", "trainer")
# Hosts that only this machine can reach: GATEWAY_AUTH=auto leaves access control off there.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _addr(service: str) -> str:
    return Field(
        f"127.0.0.1:{DEFAULT_PORTS[service]}",
        description=f'host:port of the {service} service; "" means not configured (its routes answer 503).',
    )


class GatewaySettings(CommonSettings):
    """Where the gateway listens, where its backends are and how long it waits for them."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(DEFAULT_PORTS["gateway"], ge=0, le=65535, description="HTTP port.")

    dataset_addr: str = _addr("dataset")
    tagger_addr: str = _addr("tagger")
    rater_addr: str = _addr("rater")
    trainer_addr: str = _addr("trainer")

    # Deadlines per backend: dataset calls are database work; the model
    # services run networks on uploads (a full bulk request on a CPU takes a
    # while), so they get longer.
    dataset_timeout_seconds: float = Field(10.0, gt=0, description="Deadline for dataset service calls.")
    tagger_timeout_seconds: float = Field(60.0, gt=0, description="Deadline for tagger service calls.")
    rater_timeout_seconds: float = Field(60.0, gt=0, description="Deadline for rater service calls.")
    trainer_timeout_seconds: float = Field(10.0, gt=0, description="Deadline for trainer service calls.")
    health_timeout_seconds: float = Field(2.0, gt=0, description="Deadline for each backend's health check (/readyz).")

    trust_request_id: bool = Field(
        True,
        description="Keep a client's X-Request-ID when it is 1-64 characters of [A-Za-z0-9._-] "
        "(turn off when the gateway faces untrusted clients directly).",
    )
    cors_origins: str = Field(
        "*",
        description="Browser origins allowed to call the API cross-site: comma-separated "
        "(`https://app.example.org,http://localhost:3000`), `*` for every origin (the original's "
        "behaviour; no credentials are allowed with `*`), empty for none.",
    )
    auth: str = Field(
        "auto",
        pattern="^(auto|on|off)$",
        description="Access control: `on`, `off`, or `auto` (on unless the gateway listens only on loopback). "
        "The gateway logs a warning at start when it is off.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="An admin token accepted as is (bootstrapping an install, automation); at least 22 characters. "
        "Prefer GATEWAY_ADMIN_TOKEN_FILE.",
    )
    admin_token_file: Path | None = Field(
        None, description="A file holding the admin token (a mounted secret); trailing whitespace is ignored."
    )
    auth_cache_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="How long a verified token is trusted without asking the dataset service again: a token "
        "revoked or expired elsewhere keeps working on this gateway replica for at most this long.",
    )
    auth_failures_per_minute: int = Field(
        10,
        ge=1,
        description="Failed logins and failed token uses allowed per client address in a minute; more: 429.",
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated CIDRs (`10.0.0.0/8,fd00::/8`) of reverse proxies whose `X-Forwarded-For`, "
        "`X-Forwarded-Host` and `X-Forwarded-Proto` are believed; from any other peer those headers are ignored "
        "(the client address is the TCP peer). Empty: no proxy is trusted. Set it to the proxy's address range.",
    )
    max_form_field_bytes: int = Field(64 * KiB, gt=0, description="Size limit of one non-file multipart form field.")

    # Uploads: spooled (1 MiB of a file in memory, the rest on disk) and
    # passed on to the model services in chunks of TAGRATE_BULK_CHUNK_BYTES.
    spool_dir: Path | None = Field(
        None,
        description="Directory for the temporary files uploads spool to (deleted as soon as they are opened); "
        "unset: the system's temporary directory. Not a memory-backed tmpfs, or uploads count against memory.",
    )
    bulk_chunk_files: int = Field(
        32, ge=1, le=1024, description="Most files per gRPC call when a bulk upload is passed on to a model service."
    )
    bulk_calls_in_flight: int = Field(
        2, ge=1, le=64, description="Most gRPC calls at once for one bulk upload (each holds one chunk in memory)."
    )

    # The HTTP edge (enforced while uvicorn parses, before any route runs).
    max_url_bytes: int = Field(16 * KiB, ge=256, description="Longest request target (path and query); longer: 414.")
    max_header_bytes: int = Field(
        32 * KiB, ge=1024, description="Most bytes of request headers (names and values); more: 431."
    )
    max_header_count: int = Field(100, ge=8, description="Most request headers; more: 431.")
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="Time a client has to send a whole request head; then 408 and the connection closes."
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a request body may make no progress (no bytes arrive) before the connection closes.",
    )

    @property
    def cors_origin_list(self) -> list[str]:
        """The allowed origins, trimmed, empty items dropped."""
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def trusted_proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """GATEWAY_TRUSTED_PROXIES parsed; a malformed item is a start-up error naming it."""
        networks = []
        for item in self.trusted_proxies.split(","):
            if item.strip():
                try:
                    networks.append(ip_network(item.strip(), strict=False))
                except ValueError:
                    raise ValueError(f"GATEWAY_TRUSTED_PROXIES: {item.strip()!r} is not a CIDR") from None
        return tuple(networks)

    @property
    def auth_enabled(self) -> bool:
        """Whether access control is on: ``auto`` is on unless the gateway
        binds only a loopback address."""
        if self.auth != "auto":
            return self.auth == "on"
        return self.host.strip("[]").lower() not in LOOPBACK_HOSTS

    def admin_token_value(self) -> str | None:
        """The bootstrap admin token (the file wins over the variable), or None."""
        if self.admin_token_file is not None:
            return self.admin_token_file.read_text(encoding="utf-8").strip() or None
        return self.admin_token.get_secret_value() if self.admin_token is not None else None

    def backend_addr(self, service: str) -> str:
        return getattr(self, f"{service}_addr")

    def backend_timeout(self, service: str) -> float:
        return getattr(self, f"{service}_timeout_seconds")

"""The Kubernetes manifests' network: the policies that open each call (and
nothing else) and the Traefik route in front of the gateway. The containers,
names, storage, scaling and overlays are checked in test_kubernetes.py."""

from __future__ import annotations

from tests.deploy.manifests import (
    SERVICE_PREFIX,
    Rendered,
    assert_routes_every_api_path,
    container_env,
    parse_address,
    read_settings,
    service_port_of,
)

# ---- network policies --------------------------------------------------------------


def allowed_callers(overlay: Rendered, target: str, port: int) -> set[str]:
    """Names of the workloads (same namespace) allowed to reach ``target`` on ``port``."""
    callers = set()
    for policy in overlay.of_kind("NetworkPolicy"):
        if not overlay.pods_selected(policy["spec"]["podSelector"].get("matchLabels", {})) or (
            policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") not in (None, target)
        ):
            continue
        for rule in policy["spec"].get("ingress", []):
            if rule.get("ports") and port not in {p["port"] for p in rule["ports"]}:
                continue
            for peer in rule.get("from", []):
                if "namespaceSelector" in peer:
                    continue  # other namespaces (Traefik, Prometheus)
                for workload in overlay.pods_selected(peer["podSelector"]["matchLabels"]):
                    callers.add(workload["metadata"]["name"])
    return callers


def test_everything_is_closed_unless_a_policy_opens_it(overlay: Rendered) -> None:
    deny = overlay.get("NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and not deny.get("ingress")
    for workload in overlay.workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        own = [
            p
            for p in overlay.of_kind("NetworkPolicy")
            if p["spec"]["podSelector"].get("matchLabels")
            == {"app.kubernetes.io/name": labels["app.kubernetes.io/name"]}
        ]
        assert len(own) == 1, f"{workload['metadata']['name']} has {len(own)} NetworkPolicies of its own"


def test_every_configured_call_is_allowed_and_nothing_else(overlay: Rendered) -> None:
    """Callers per service come from the ConfigMap (``<SELF>_<PEER>_ADDR``)."""
    expected: dict[str, set[str]] = {name: set() for name in SERVICE_PREFIX}
    for key, value in overlay.settings().items():
        if key.endswith("_ADDR"):
            caller = key.split("_", 1)[0].lower()
            expected[parse_address(value)[0]].add(caller)
    for name, callers in expected.items():
        port = service_port_of(overlay, name)
        assert allowed_callers(overlay, name, port) == callers, name


def test_only_the_processes_whose_database_it_is_reach_postgres(overlay: Rendered) -> None:
    """The dataset service always; the trainers where their job records are
    in PostgreSQL too (the cpu-s3 overlay), and nobody else."""
    users = set()
    for process in ("dataset", "trainer"):
        container = overlay.get("Deployment", process)["spec"]["template"]["spec"]["containers"][0]
        if read_settings(process, container_env(overlay, container)).database_url.startswith("postgresql"):
            users.add(process)
    assert "dataset" in users
    assert allowed_callers(overlay, "postgres", 5432) == users


def test_only_traefik_and_prometheus_reach_the_gateway(overlay: Rendered) -> None:
    policy = overlay.get("NetworkPolicy", "gateway")["spec"]
    peers = [peer for rule in policy["ingress"] for peer in rule["from"]]
    names = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in peers}
    assert names == {"traefik", "prometheus"}
    assert allowed_callers(overlay, "gateway", 8000) == set()


# ---- Traefik -----------------------------------------------------------------------


def test_ingress_route_covers_every_documented_path(overlay: Rendered) -> None:
    (route,) = overlay.get("IngressRoute", "tagrate")["spec"]["routes"]
    assert_routes_every_api_path(route["match"])
    (backend,) = route["services"]
    workload = overlay.pods_selected(overlay.get("Service", backend["name"])["spec"]["selector"])[0]
    assert workload["metadata"]["name"] == "gateway"
    service_ports = {p.get("name"): p for p in overlay.get("Service", backend["name"])["spec"]["ports"]}
    assert backend["port"] in service_ports or backend["port"] in {p["port"] for p in service_ports.values()}


def test_body_limit_matches_the_gateways_upload_limits(overlay: Rendered) -> None:
    (route,) = overlay.get("IngressRoute", "tagrate")["spec"]["routes"]
    middlewares = {m["metadata"]["name"]: m for m in overlay.of_kind("Middleware")}
    names = [m["name"] for m in route["middlewares"]]
    assert all(name in middlewares for name in names)
    limits = [
        middlewares[n]["spec"]["buffering"]["maxRequestBodyBytes"]
        for n in names
        if "buffering" in middlewares[n]["spec"]
    ]
    assert limits == [read_settings("gateway", overlay.settings()).max_request_bytes]

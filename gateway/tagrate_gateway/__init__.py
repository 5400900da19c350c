"""The tagrate gateway: the public REST API (docs/API.md) in front of the
gRPC services. It owns nothing persistent; every route validates its
parameters, calls one RPC and shapes the JSON."""

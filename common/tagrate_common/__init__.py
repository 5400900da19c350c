"""Code every tagrate service shares: settings, logging, gRPC plumbing,
error mapping, image validation and metrics."""

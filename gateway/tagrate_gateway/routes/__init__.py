"""One router per endpoint group; each route parses its documented
parameters (params.py), makes one RPC and shapes the JSON."""

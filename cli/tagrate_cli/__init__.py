"""The ``tagrate`` command line: import a collection into a running
tagrate server, export it, and show its state, over the gateway's public
REST API only (so it works against a remote server too)."""

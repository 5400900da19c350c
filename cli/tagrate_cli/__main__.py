"""``python -m tagrate_cli`` is the ``tagrate`` command."""

from .main import main

raise SystemExit(main())

"""``python -m psremote`` runs the command-line interface."""

from psremote.cli import main

raise SystemExit(main())

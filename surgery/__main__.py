"""`python -m surgery`: the command line (see surgery/cli.py)."""

from .cli import main

raise SystemExit(main())

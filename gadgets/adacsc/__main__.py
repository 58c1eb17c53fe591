"""`python -m adacsc` runs the command line."""

from adacsc.cli import main

raise SystemExit(main())

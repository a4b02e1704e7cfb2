"""`python -m node`: the `chancery` command line (how `chancery up` starts each node)."""

from node.cli import main

raise SystemExit(main())

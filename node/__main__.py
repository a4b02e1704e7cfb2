"""`python -m node`: the `chancery` command line (how `chancery up` starts each node)."""

from node.cli import main

# Guarded: verification worker processes import the parent's main module by name.
if __name__ == "__main__":
    raise SystemExit(main())

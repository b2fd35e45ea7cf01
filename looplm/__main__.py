"""`python -m looplm ...` (what torchrun launches) is the `looplm` console script."""

from .cli import main

raise SystemExit(main())

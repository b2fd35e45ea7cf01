"""`python -m looplm ...` (what torchrun launches) is the `looplm` console script."""

from .launch import main

raise SystemExit(main())

"""`python -m sdk ...`: the `stencil` command line without the installed console script."""

from sdk.cli import main

raise SystemExit(main())

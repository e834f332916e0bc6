"""``python -m pgmm_core``: see :mod:`pgmm_core.cli`."""

from pgmm_core.cli import main

raise SystemExit(main())

"""Entry point for ``python -m bench.attacks``."""

from bench.attacks.run import main

raise SystemExit(main())

"""``python -m latentgeo.report RUN_DIR|SWEEP_DIR``: ``latentgeo.report.page.main``."""

from latentgeo.report.page import main

raise SystemExit(main())

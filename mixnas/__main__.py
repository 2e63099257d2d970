"""``python -m mixnas ...``: the same command line as the ``mixnas`` script."""

from mixnas.launch.cli import main

raise SystemExit(main())

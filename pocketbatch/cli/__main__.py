"""``python -m pocketbatch.cli``: the same as the ``pocketbatch`` command."""

from pocketbatch.cli import main

raise SystemExit(main())

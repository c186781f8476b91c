"""``python -m lib``: compress / decompress / info / fit-entropy (see lib/cli.py)."""
import sys

from lib.cli import main

sys.exit(main())

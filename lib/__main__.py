"""``python -m lib``: compress / decompress / info / fit-entropy / fit-prior (see lib/bitstream/cli.py)."""
import sys

from lib.bitstream.cli import main

sys.exit(main())

"""``python -m lib``: compress / decompress / info / fit-entropy (see lib/bitstream/cli.py)."""
import sys

from lib.bitstream.cli import main

sys.exit(main())

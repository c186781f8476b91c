"""``python -m lib.training --preset cpu --data data/default --run-dir runs/cpu`` (also under torchrun)."""
import sys

from lib.training.cli import main

sys.exit(main())

"""``python -m lib.training --preset cpu --data data/default --run-dir runs/cpu`` (also under torchrun)."""
import sys

from lib.training.trainer import main

sys.exit(main())

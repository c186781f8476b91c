"""``python -m lib.training``: train from the command line (also under torchrun)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch.distributed as dist

from lib.config import load_config
from lib.training.trainer import Trainer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train the codec (see lib/training/trainer.py).")
    ap.add_argument("--preset", default="cpu", help="preset name in lib/presets or a YAML path")
    ap.add_argument("--data", default="data/default", help="dataset folder (made by notebook 01)")
    ap.add_argument("--run-dir", default=None, help="where checkpoints and logs go (default runs/<preset>)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--minutes", type=float, default=None,
                    help="a budget of training minutes: the run ends decayed at the steps or this, whichever is first")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. model.dim=32")
    ap.add_argument("--fresh", action="store_true",
                    help="start afresh; a previous run in run-dir is moved to <run-dir>.old<k> first")
    ap.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                    help="start from this checkpoint's codec (weights and codebooks) with a fresh optimizer and "
                         "schedule (train.init_from): fine-tuning on other data, or an adversarial phase")
    args = ap.parse_args(argv)
    if args.init_from is not None and not Path(args.init_from).is_file():
        ap.error(f"--init-from: no such checkpoint: {args.init_from}")
    overrides = list(args.set) + ([f"train.steps={args.steps}"] if args.steps is not None else []) + (
        [f"train.minutes={args.minutes}"] if args.minutes is not None else []) + (
        [f"train.init_from={Path(args.init_from).resolve()}"] if args.init_from is not None else [])
    cfg = load_config(args.preset, overrides)
    run_dir = args.run_dir or f"runs/{cfg.name}"
    trainer = Trainer(cfg, args.data, run_dir, resume=not args.fresh)
    trainer.fit()
    trainer.close()
    if trainer.rank == 0:
        print(json.dumps(trainer.validate(), indent=1))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ray Jobs entrypoint: `ray job submit --working-dir . -- python jobs/train.py --config configs/FILE.yaml`."""
import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

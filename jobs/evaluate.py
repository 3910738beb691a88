"""Ray Jobs entrypoint: `ray job submit --working-dir . -- python jobs/evaluate.py --config configs/FILE.yaml`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the submitted working_dir's code, installed or not

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))

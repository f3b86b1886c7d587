"""How long the generated COCO data set takes to write (the default ``SyntheticSpec``: 64 train images).

    python bench/bench_synthetic.py [--repeats 3]

Prints a Markdown table: repeat, seconds, images per second. Timings live here, not in the tests.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from trainer.data.synthetic import SyntheticSpec, write_coco


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| repeat | seconds | images/s |\n| --- | --- | --- |")
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            root = write_coco(Path(folder), SyntheticSpec())
            seconds = time.perf_counter() - start
            images = len(list(root.rglob("*.jpg")))
        print(f"| {i + 1} | {seconds:.2f} | {images / seconds:.0f} |")


if __name__ == "__main__":
    main()

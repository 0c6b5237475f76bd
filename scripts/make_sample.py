"""Rebuild the embedded sample (data/01_raw/dsb2018_sample) from a DSB stage1_train.zip.

    python scripts/make_sample.py ../shared/dsb2018/stage1_train.zip data/01_raw/dsb2018_sample

Picks a fixed, seeded set of images per (modality, size) so the sample spans small and large
fluorescence, stained tissue and brightfield, and copies their files byte for byte in the
Kaggle layout. The full data set must never be committed; this sample is ~30 images.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from nucleus_segmentation.datasets.dsb import DSBSource
from nucleus_segmentation.imaging.colour import classify_modality

# (modality, (height, width)) -> how many images of that kind the sample holds.
PLAN = {
    ("fluorescence", (256, 256)): 9,
    ("fluorescence", (256, 320)): 1,
    ("fluorescence", (260, 347)): 1,
    ("fluorescence", (360, 360)): 3,
    ("fluorescence", (520, 696)): 3,
    ("fluorescence", (512, 640)): 1,
    ("stained", (256, 320)): 8,
    ("brightfield", (256, 320)): 2,
    ("brightfield", (1024, 1024)): 2,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="stage1_train.zip or its extracted folder")
    parser.add_argument("target", help="folder to (re)create")
    parser.add_argument("--seed", type=int, default=2018)
    args = parser.parse_args()
    source = DSBSource(args.source)
    groups: dict[tuple, list[str]] = {}
    for image_id in source.image_ids:
        image = source.read(image_id).image
        key = (classify_modality(image), image.shape[:2])
        groups.setdefault(key, []).append(image_id)
    rng = np.random.default_rng(args.seed)
    chosen = [
        image_id
        for key, count in PLAN.items()
        for image_id in rng.choice(sorted(groups[key]), size=count, replace=False)
    ]
    target = Path(args.target)
    if target.exists():
        shutil.rmtree(target)
    for image_id in sorted(chosen):
        members = source.images[image_id] + source.masks.get(image_id, [])
        for member in members:
            out = target / member.split("/", member.count("/") - 2)[-1]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(source._read_bytes(member))
    print(f"wrote {len(chosen)} images to {target}")


if __name__ == "__main__":
    main()

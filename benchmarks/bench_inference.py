"""Inference speed and memory: seconds per 512x512 image (network + post-processing) and the
throughput of `kedro run --pipeline inference` on a folder of DSB images (the test split).

    python benchmarks/bench_inference.py     # writes the "inference" section of docs/benchmarks.md
    python benchmarks/bench_inference.py --env percentile   # that environment's model and files

Needs a trained model (`kedro run --pipeline training`), the tuned separation
(`kedro run --pipeline evaluation`) and the ingested full data (`data_processing` on
stage1_train): the images are the test split's (96 on the grouped split), written as PNG
at their own sizes (from 256x256 to 1040x1388) to a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _common import PROJECT, kedro_run, latest_version, write_section  # noqa: E402
from kedro.config import OmegaConfigLoader  # noqa: E402
from kedro.io.core import Version  # noqa: E402
from kedro_datasets.json import JSONDataset  # noqa: E402
from skimage.morphology import h_maxima  # noqa: E402

from nucleus_segmentation import segment  # noqa: E402
from nucleus_segmentation.datasets import KerasModelDataset, NpzDataset  # noqa: E402
from nucleus_segmentation.datasets.image_folder import ImageFolder, index_images  # noqa: E402
from nucleus_segmentation.imaging import instances  # noqa: E402
from nucleus_segmentation.imaging.codec import encode_png  # noqa: E402
from nucleus_segmentation.imaging.geometry import resize_image  # noqa: E402
from nucleus_segmentation.model import folding  # noqa: E402
from nucleus_segmentation.model.precision import resolve_precision  # noqa: E402
from nucleus_segmentation.parallel import available_cores  # noqa: E402
from nucleus_segmentation.pipelines.inference.nodes import segment_images  # noqa: E402
from nucleus_segmentation.settings import CONFIG_LOADER_ARGS  # noqa: E402

LATEST = Version(None, None)


def configuration(env: str) -> tuple[dict, dict]:
    """(catalog, parameters) of ``env`` as `kedro run --env` resolves them (the project's
    own config loader settings): whose model, separation, split and settings to measure."""
    loader = OmegaConfigLoader(
        str(PROJECT / "conf"), **{**CONFIG_LOADER_ARGS, "default_run_env": env}
    )
    return loader["catalog"], loader["parameters"]


def latest_file(folder: str, name: str) -> Path:
    return latest_version(PROJECT / folder, name, "see this script's docstring")


def test_images(catalog: dict) -> dict[str, np.ndarray]:
    """The test-split images of the latest ingested set, as stored (RGB/RGBA/gray, own size)."""
    split_file = Path(catalog["data_split"]["filepath"])
    split = pd.read_csv(latest_file(str(split_file.parent), split_file.name))
    ingested = NpzDataset(filepath=str(latest_file("data/02_intermediate", "ingested_images.npz")))
    bundle = ingested.load()
    ids = split.loc[split["split"] == "test", "image_id"].tolist()
    return {image_id: bundle[f"{image_id}/image"] for image_id in ids}


def write_folder(images: dict[str, np.ndarray], folder: Path, size: int | None = None) -> None:
    folder.mkdir(parents=True)
    for image_id, image in images.items():
        if size:
            image = resize_image(image[..., :3] if image.ndim == 3 else image, (size, size), "auto")
        elif image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        (folder / f"{image_id}.png").write_bytes(encode_png(image))


def mosaics(images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """512x512 RGB mosaics of four 256x256 images each (in order; the rest left out)."""
    tiles = [
        np.dstack([image] * 3) if image.ndim == 2 else image[..., :3]
        for image in images.values()
        if image.shape[:2] == (256, 256)
    ]
    return {
        f"mosaic{index // 4:02d}": np.vstack(
            [np.hstack(tiles[index : index + 2]), np.hstack(tiles[index + 2 : index + 4])]
        )
        for index in range(0, len(tiles) - 3, 4)
    }


# The stages of one image that the segmentation path calls by these names in `segment`.
STAGES = {"network": "network_probability", "separation": "separate_instances"}


@contextlib.contextmanager
def stage_clock():
    """Seconds spent in each of ``STAGES`` while the block runs (lists, one entry per call),
    by wrapping the functions where `segment` looks them up; restored afterwards."""
    spent: dict[str, list[float]] = {stage: [] for stage in STAGES}
    originals = {name: getattr(segment, name) for name in STAGES.values()}

    def clocked(stage, function):
        def run(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[stage].append(time.perf_counter() - started)

        return run

    for stage, name in STAGES.items():
        setattr(segment, name, clocked(stage, originals[name]))
    try:
        yield spent
    finally:
        for name, function in originals.items():
            setattr(segment, name, function)


@contextlib.contextmanager
def whole_map_h_maxima():
    """The seeds' h-maxima as before 2026-12-02: one skimage call over the whole map (the
    same seeds: tests/imaging/test_instances_and_matching.py), to time what the repeated
    dilation of `instances._h_maxima` saves (since 2026-12-07; region by region before)."""
    original = instances._h_maxima
    instances._h_maxima = lambda relief, depth: h_maxima(relief, depth).astype(bool)
    try:
        yield
    finally:
        instances._h_maxima = original


def unfolded_batch_norms():
    """Each BatchNorm a layer of its own instead of folded into the convolution before it
    (model/folding.py, the same outputs; the upsampling rewrite stays), to time what folding
    saves."""
    return mock.patch.object(folding, "fold_batch_norms", lambda model, refresh=False: model)


def unphased_upsampling():
    """Each x2 nearest upsampling written out and convolved at the large size instead of four
    phase convolutions of the small map (model/upsampling.py, the same outputs; the folding
    stays), to time what the rewrite saves."""
    return mock.patch.object(folding, "phase_upsampling", lambda model, refresh=False: model)


def per_image_seconds(
    images: dict[str, np.ndarray],
    scratch: Path,
    precision: str,
    conf: tuple[dict, dict],
    count: int = 20,
    kind: str = "resized",
) -> dict:
    """Median and mean seconds per 512x512 image of `segment_images` (decode, preprocess,
    network, watershed, outlines, measurement, RLE; everything but writing the files) with
    the network in ``precision``, after one warm-up image (graph tracing happens once per
    shape). ``kind``: ``resized``, the test images resized to 512x512 (a 256x256 image's
    nuclei magnified 2x), or ``mosaic``, 2x2 mosaics of 256x256 test images (nuclei at
    their own size: the images `segmentation.scale.nucleus_area` enlarges)."""
    catalog, parameters = conf
    model = KerasModelDataset(filepath=catalog["trained_model"]["filepath"], version=LATEST).load()
    postprocessing = JSONDataset(
        filepath=catalog["instance_postprocessing"]["filepath"], version=LATEST
    ).load()
    preprocessing, segmentation, inference = (
        parameters[k] for k in ("preprocessing", "segmentation", "inference")
    )
    settings = (preprocessing, {**segmentation, "precision": precision}, inference)
    folder = scratch / f"512_{kind}"
    if not folder.exists() and kind == "mosaic":
        write_folder(dict(list(mosaics(images).items())[: count + 1]), folder)
    elif not folder.exists():
        write_folder(dict(list(images.items())[: count + 1]), folder, size=512)
    files = index_images(folder)
    names = sorted(files)
    warm = ImageFolder(folder, {names[0]: files[names[0]]})
    list(segment_images(warm, model, postprocessing, *settings))  # the stream, consumed
    times, per_image, rescaled = [], {stage: [] for stage in STAGES}, 0
    with stage_clock() as spent:
        for name in names[1:]:
            one = ImageFolder(folder, {name: files[name]})
            before = {stage: len(calls) for stage, calls in spent.items()}
            started = time.perf_counter()
            list(segment_images(one, model, postprocessing, *settings))
            times.append(time.perf_counter() - started)
            calls = {stage: spent[stage][before[stage] :] for stage in STAGES}
            if not all(calls.values()):
                raise RuntimeError(
                    f"no call of {sorted(STAGES.values())} for {name} in this process: did "
                    "segmentation run in worker processes (inference.parallel)?"
                )
            # An image whose nuclei are outside segmentation.scale.nucleus_area is predicted
            # twice (and its nuclei measured by a watershed): its stages are summed.
            rescaled += len(calls["network"]) > 1
            for stage, seconds in calls.items():
                per_image[stage].append(sum(seconds))
    return {
        "median": statistics.median(times),
        "mean": statistics.fmean(times),
        "count": len(times),
        "rescaled": rescaled,
        "model": model.loaded_from.version,
        **{stage: statistics.median(seconds) for stage, seconds in per_image.items()},
    }


def folder_run(images: dict[str, np.ndarray], scratch: Path, env: str) -> dict:
    folder, out = scratch / "folder", scratch / "out"
    write_folder(images, folder)
    result = kedro_run(
        "inference",
        "--env",
        env,
        "--params",
        f"inference_input={folder},inference_output={out}",
        log_path=PROJECT / "benchmark_inference.log",
    )
    pixels = sum(image.shape[0] * image.shape[1] for image in images.values())
    (manifest_file,) = out.glob("*/manifest.json")
    manifest = json.loads(manifest_file.read_text())
    factor = manifest["parameters"]["segmentation"]["scale"]["factor"]
    rescaled = sum(image["scale_factor"] not in (None, factor) for image in manifest["images"])
    return {**result, "megapixels": pixels / 1e6, "rescaled": rescaled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local", help="whose model and files (default: base)")
    parser.add_argument(
        "--print-only", action="store_true", help="print the table, leave docs/benchmarks.md"
    )
    args = parser.parse_args()
    env = args.env
    os.chdir(PROJECT)
    conf = configuration(env)
    images = test_images(conf[0])
    with tempfile.TemporaryDirectory() as scratch:
        default = resolve_precision(conf[1]["segmentation"]["precision"])
        singles = {
            precision: per_image_seconds(images, Path(scratch), precision, conf)
            for precision in ("float32", "mixed_bfloat16")
        }
        single = singles[default]
        mosaic = per_image_seconds(images, Path(scratch), default, conf, kind="mosaic")
        with whole_map_h_maxima():
            whole = per_image_seconds(images, Path(scratch), default, conf)
            whole_mosaic = per_image_seconds(images, Path(scratch), default, conf, kind="mosaic")
        with unfolded_batch_norms():
            unfolded = per_image_seconds(images, Path(scratch), default, conf)
        with unphased_upsampling():
            unphased = per_image_seconds(images, Path(scratch), default, conf)
        peak_in_process = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        folder = folder_run(images, Path(scratch), env)
    option = "" if env == "local" else f" --env {env}"
    body = "\n".join(
        [
            f"Command: `python benchmarks/bench_inference.py{option}`. "
            f"CPU default recipe's model (`{conf[0]['trained_model']['filepath']}` version "
            f"{single['model']}), separation tuned by "
            f"`evaluation`, no test-time augmentation; {available_cores()} cores; "
            f"`segmentation.precision` default (auto) here: {default}.",
            "",
            "| figure | measured | target |",
            "|---|---|---|",
            *(
                f"| seconds per 512x512 image, network in {precision}, everything but writing "
                f"(median of {one['count']}; decode, preprocessing, network, watershed, "
                f"outlines, measurement) | {one['median']:.3f} s (mean {one['mean']:.3f}; "
                f"medians: network {one['network']:.3f} s, separation {one['separation']:.3f} s; "
                f"{one['rescaled']} of {one['count']} predicted again rescaled) "
                "| <= 0.3 s |"
                for precision, one in singles.items()
            ),
            f"| the same in {default}, 2x2 mosaics of four 256x256 test images (nuclei at "
            f"their own size, median of {mosaic['count']}) | {mosaic['median']:.3f} s (mean "
            f"{mosaic['mean']:.3f}; network {mosaic['network']:.3f} s, separation "
            f"{mosaic['separation']:.3f} s; {mosaic['rescaled']} of {mosaic['count']} "
            "predicted again rescaled) | <= 0.3 s |",
            f"| the same in {default}, seeds' h-maxima in one skimage call over the whole map "
            f"(before 2026-12-02) | {whole['median']:.3f} s (separation "
            f"{whole['separation']:.3f} s); mosaics {whole_mosaic['median']:.3f} s (separation "
            f"{whole_mosaic['separation']:.3f} s) | |",
            f"| the same in {default}, each BatchNorm a layer of its own, not folded into its "
            f"convolution (upsampling still phased) | {unfolded['median']:.3f} s (network "
            f"{unfolded['network']:.3f} s) | |",
            f"| the same in {default}, each x2 upsampling written out and convolved at the "
            f"large size, not as four phase convolutions of the small map (BatchNorm still "
            f"folded) | {unphased['median']:.3f} s (network {unphased['network']:.3f} s) "
            "| |",
            f"| folder of {len(images)} test images at their own sizes "
            f"({folder['megapixels']:.1f} Mpixel), whole `kedro run --pipeline inference` "
            f"(start-up, model load, writing masks, 16-bit labels, overlays, tables) "
            f"| {folder['wall']:.1f} s = {len(images) / folder['wall']:.2f} images/s "
            f"({folder['rescaled']} predicted again rescaled) | |",
            f"| peak memory, `kedro run` process tree | {folder['peak'] / 2**30:.2f} GiB | |",
            f"| peak memory, the 512x512 loop in one process | {peak_in_process:.2f} GiB | |",
            "",
            "For reference, Cellpose's published figure is 0.65 s per 512x512 image for its "
            "network alone on a 10-core CPU.",
        ]
    )
    if args.print_only:
        print(body)
    else:
        print(write_section("inference", "Inference (`inference` pipeline)", body))


if __name__ == "__main__":
    main()

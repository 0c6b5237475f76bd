"""Writes notebooks/exploration.ipynb (outputs stripped): run it after editing the cells here.

python scripts/make_notebook.py
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# Exploring the data, each preprocessing step and the model's nuclei\n\n"
        "Uses the Kedro session of this project (`%load_ext kedro.ipython`): `catalog` loads\n"
        "the latest version of every dataset the pipelines wrote, `context.params` holds the\n"
        "parameters. Run `kedro run` first (the embedded sample is enough), then open with\n"
        "`kedro jupyter lab` or any Jupyter started in this project."
    ),
    new_code_cell("%load_ext kedro.ipython"),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n"
        "from skimage.color import label2rgb\n\n"
        "from nucleus_segmentation import bundle\n"
        "from nucleus_segmentation.imaging.colour import to_grayscale, to_uint8\n"
        "from nucleus_segmentation.imaging.overlay import draw_contours\n"
        "from nucleus_segmentation.imaging.preprocess import preprocess_image\n"
        "from nucleus_segmentation.segment import SegmentationSettings, segment_image\n\n"
        "params = context.params\n"
        'ingested = catalog.load("ingested_images")\n'
        'split = catalog.load("data_split")\n'
        'metadata = catalog.load("image_metadata").set_index("image_id")\n'
        "# per modality the image with the most nuclei, a held-out (test) one where there is one\n"
        'table = split.set_index("image_id").join(metadata["nucleus_count"])\n'
        'table["held_out"] = table["split"] == "test"\n'
        'table = table.sort_values(["held_out", "nucleus_count"], ascending=False)\n'
        'examples = table.reset_index().groupby("modality")["image_id"].first()\n'
        "examples"
    ),
    new_markdown_cell("## Raw images and their merged nucleus masks (one colour per nucleus)"),
    new_code_cell(
        "fig, axes = plt.subplots(2, len(examples), figsize=(4 * len(examples), 8))\n"
        "for column, (modality, image_id) in enumerate(examples.items()):\n"
        '    image = bundle.field(ingested, image_id, "image")\n'
        '    labels = bundle.field(ingested, image_id, "labels")\n'
        '    axes[0, column].imshow(to_uint8(image), cmap="gray")\n'
        '    axes[0, column].set_title(f"{modality}\\n{image.shape} {image.dtype}")\n'
        "    axes[1, column].imshow(label2rgb(labels, bg_label=0))\n"
        '    axes[1, column].set_title(f"{labels.max()} nuclei")\n'
        "for axis in axes.ravel():\n"
        '    axis.axis("off")'
    ),
    new_markdown_cell(
        "## Each preprocessing step\n\n"
        "The same function the pipelines use (`imaging.preprocess.preprocess_image`), with the\n"
        "steps switched on one after another (`params:preprocessing`)."
    ),
    new_code_cell(
        'steps = ["grayscale", "invert", "equalize", "smooth"]\n'
        "def upto(step):\n"
        '    chosen = dict(params["preprocessing"])  # each step\'s settings, and match_model\n'
        "    chosen.update({name: dict(chosen[name]) for name in steps[1:]})\n"
        "    for name in steps[1:]:\n"
        '        chosen[name]["enabled"] = steps.index(name) <= steps.index(step)\n'
        "    return chosen\n\n"
        "fig, axes = plt.subplots(len(examples), len(steps), figsize=(16, 4 * len(examples)))\n"
        "for row, (modality, image_id) in enumerate(examples.items()):\n"
        '    image = bundle.field(ingested, image_id, "image")\n'
        "    for column, step in enumerate(steps):\n"
        '        axes[row, column].imshow(preprocess_image(image, upto(step)), cmap="gray")\n'
        '        axes[row, column].set_title(f"{modality}: {step}")\n'
        '        axes[row, column].axis("off")'
    ),
    new_markdown_cell("## Augmented training samples (crops, flips, gray and shape perturbation)"),
    new_code_cell(
        'augmented = catalog.load("augmented_images")\n'
        "ids = bundle.sample_ids(augmented)[:6]\n"
        "fig, axes = plt.subplots(2, len(ids), figsize=(3 * len(ids), 6))\n"
        "for column, sample_id in enumerate(ids):\n"
        '    axes[0, column].imshow(bundle.field(augmented, sample_id, "image"), cmap="gray")\n'
        "    axes[0, column].set_title(sample_id[:12])\n"
        "    axes[1, column].imshow(\n"
        '        label2rgb(bundle.field(augmented, sample_id, "labels"), bg_label=0)\n'
        "    )\n"
        "for axis in axes.ravel():\n"
        '    axis.axis("off")'
    ),
    new_markdown_cell(
        "## The model's nuclei (green) against the annotation (red)\n\n"
        "`segment.segment_image` is the one path from an image to nuclei: what inference\n"
        "writes and what evaluation scores."
    ),
    new_code_cell(
        'model = catalog.load("trained_model")\n'
        'separation = catalog.load("instance_postprocessing")\n'
        'settings = SegmentationSettings.from_params(params["segmentation"])\n'
        "fig, axes = plt.subplots(1, len(examples), figsize=(5 * len(examples), 5))\n"
        "for axis, (modality, image_id) in zip(\n"
        "    np.atleast_1d(axes), examples.items(), strict=True\n"
        "):\n"
        '    image = bundle.field(ingested, image_id, "image")\n'
        '    truth = bundle.field(ingested, image_id, "labels")\n'
        '    found = segment_image(model, image, params["preprocessing"], settings, separation)\n'
        "    shown = draw_contours(to_grayscale(to_uint8(image)), truth, (255, 0, 0))\n"
        '    axis.imshow(draw_contours(shown, found, (0, 255, 0), "outer"))\n'
        '    axis.set_title(f"{modality}: {found.max()} found, {truth.max()} annotated")\n'
        '    axis.axis("off")'
    ),
]


def main() -> None:
    notebook = new_notebook(cells=CELLS)
    for index, cell in enumerate(notebook.cells):
        cell.id = f"cell-{index:02d}"  # stable ids: regenerating gives the same file
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = Path(__file__).resolve().parents[1] / "notebooks" / "exploration.ipynb"
    nbformat.write(notebook, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

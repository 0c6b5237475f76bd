"""The configuration environments resolve and override only what they should."""

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from nucleus_segmentation.model.unet import UNetConfig
from nucleus_segmentation.settings import CONFIG_LOADER_ARGS

CONF = Path(__file__).resolve().parents[1] / "conf"


def _parameters(env: str) -> dict:
    args = {**CONFIG_LOADER_ARGS, "default_run_env": env}
    loader = OmegaConfigLoader(str(CONF), **args)
    return loader["parameters"]


def test_base_parameters_build_the_cpu_model():
    params = _parameters("local")
    assert params["raw_data"] == "data/01_raw/dsb2018_sample"
    config = UNetConfig.from_params(params["training"]["model"])
    assert (config.base_filters, config.attention, config.aspp) == (16, "sap", True)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            "baseline",
            {"attention": "none", "channel_expansion": False, "aspp": False, "base_filters": 16},
        ),
        ("paper", {"attention": "sap", "base_filters": 64, "aspp_filters": 512}),
    ],
)
def test_environments_override_only_their_keys(env, expected):
    params = _parameters(env)
    model = params["training"]["model"]
    assert {key: model[key] for key in expected} == expected
    assert params["training"]["seed"] == 42  # inherited from base
    assert params["split"] == _parameters("local")["split"]
    if env == "paper":
        training = params["training"]
        assert (training["batch_size"], training["optimizer"]["name"]) == (16, "sgd")
        assert training["epochs"] * training["steps_per_epoch"] == 10_000
        assert params["augmentation"]["transforms"]["output_size"] == 512


def test_the_default_has_a_boundary_class_and_two_class_changes_only_that():
    base, two_class = _parameters("local"), _parameters("two_class")
    assert base["training"]["targets"] == {
        "kind": "boundary",
        "boundary_width": 2,
        "contact_weight": 0.0,  # contact loss weights off
        "contact_sigma": 3.0,
    }
    assert two_class["training"]["targets"]["kind"] == "binary"
    ignore = ("targets", "checkpoint_dir")
    assert {k: v for k, v in two_class["training"].items() if k not in ignore} == {
        k: v for k, v in base["training"].items() if k not in ignore
    }
    # The paper's configuration and the previous CPU recipe keep the paper's two classes.
    for env in ("paper", "fixed512"):
        params = _parameters(env)
        assert params["training"]["targets"]["kind"] == "binary"


def _catalog(env: str) -> dict:
    args = {**CONFIG_LOADER_ARGS, "default_run_env": env}
    return OmegaConfigLoader(str(CONF), **args)["catalog"]


@pytest.mark.parametrize(
    ("env", "model", "data", "mode"),
    [
        ("local", "attention_unet", "preprocessed_images.npz", "native"),
        ("baseline", "unet_baseline", "preprocessed_images.npz", "native"),
        ("two_class", "attention_unet_two_class", "preprocessed_images.npz", "native"),
        ("paper", "attention_unet_paper", "preprocessed_images_paper.npz", "fixed"),
        ("fixed512", "attention_unet_fixed512", "preprocessed_images_fixed512.npz", "fixed"),
        (
            "random_split",
            "attention_unet_random_split",
            "preprocessed_images_random_split.npz",
            "native",
        ),
        ("logo", "attention_unet_logo", "preprocessed_images_logo.npz", "native"),
        (
            "hematoxylin",
            "attention_unet_hematoxylin",
            "preprocessed_images_hematoxylin.npz",
            "native",
        ),
        (
            "percentile",
            "attention_unet_percentile",
            "preprocessed_images_percentile.npz",
            "native",
        ),
        (
            "stain_jitter",
            "attention_unet_stain_jitter",
            "preprocessed_images_stain_jitter.npz",
            "native",
        ),
        ("seed43", "attention_unet_seed43", "preprocessed_images_seed43.npz", "native"),
        (
            "oversample",
            "attention_unet_oversample",
            "preprocessed_images_oversample.npz",
            "native",
        ),
        (
            "no_attention",
            "attention_unet_no_attention",
            "preprocessed_images_percentile.npz",
            "native",
        ),
        ("gap", "attention_unet_gap", "preprocessed_images_percentile.npz", "native"),
        ("no_ce", "attention_unet_no_ce", "preprocessed_images_percentile.npz", "native"),
        ("no_aspp", "attention_unet_no_aspp", "preprocessed_images_percentile.npz", "native"),
        (
            "no_aspp_seed43",
            "attention_unet_no_aspp_seed43",
            "preprocessed_images_seed43.npz",
            "native",
        ),
        (
            "no_smooth",
            "attention_unet_no_smooth",
            "preprocessed_images_no_smooth.npz",
            "native",
        ),
        ("rgb", "attention_unet_rgb", "preprocessed_images_rgb.npz", "native"),
        (
            "adapt_size",
            "attention_unet_adapt_size",
            "preprocessed_images_adapt_size.npz",
            "native",
        ),
    ],
)
def test_each_environment_keeps_its_own_model_data_and_reports(env, model, data, mode):
    """Environments rename files through globals.yml: a run of one never becomes the
    "latest" model, separation or data of another, and the scale policy matches its data."""
    catalog, params = _catalog(env), _parameters(env)
    assert catalog["trained_model"]["filepath"] == f"data/06_models/{model}.keras"
    assert catalog["preprocessed_images"]["filepath"] == f"data/04_feature/{data}"
    split_file = data.replace("preprocessed_images", "data_split").replace(".npz", ".csv")
    assert catalog["data_split"]["filepath"] == f"data/03_primary/{split_file}"
    assert params["training"]["checkpoint_dir"] == f"data/06_models/checkpoints/{model}"
    assert params["segmentation"]["scale"]["mode"] == mode
    separation = catalog["instance_postprocessing"]["filepath"]
    reports = catalog["{name}_table"]["filepath"]
    if env == "local":
        assert separation == "data/06_models/instance_postprocessing.json"
        assert reports == "data/08_reporting/{name}.csv"
    else:
        assert separation == f"data/06_models/{model}_postprocessing.json"
        assert (
            reports.startswith("data/08_reporting/") and reports != "data/08_reporting/{name}.csv"
        )
    # The baseline model the evaluation compares against is always the plain U-Net's file.
    assert catalog["baseline_model"]["filepath"] == "data/06_models/unet_baseline.keras"


@pytest.mark.parametrize(
    ("env", "changed"),
    [
        ("hematoxylin", {"stain": {"representation": "hematoxylin"}}),
        ("no_smooth", {"smooth": {"enabled": False}}),
        ("rgb", {"stain": {"representation": "rgb"}}),
        ("paper", {"equalize": {"method": "global"}}),
    ],
)
def test_the_preprocessing_environments_change_one_preprocessing_setting(env, changed):
    """The lever environments differ from the default in one preprocessing setting, so their
    models measure that setting alone; training, segmentation and the split stay the base's."""
    base, own = _parameters("local"), _parameters(env)
    for group, settings in changed.items():
        for key, value in settings.items():
            assert own["preprocessing"][group][key] == value != base["preprocessing"][group][key]
            own["preprocessing"][group][key] = base["preprocessing"][group][key]
    if env == "paper":  # the paper's protocol changes more than preprocessing
        assert own["preprocessing"] == base["preprocessing"]
        return
    for section in ("training", "preprocessing", "segmentation", "split", "augmentation"):
        if section == "training":  # each environment checkpoints under its own model's name
            own[section].pop("checkpoint_dir"), base[section].pop("checkpoint_dir")
        assert own[section] == base[section], section


def test_the_default_normalises_each_image_by_its_percentiles_as_measured_in_percentile():
    """The percentile environment measured the setting the base now has: apart from file
    names it is the default, so its documented model is the default recipe's."""
    base, own = _parameters("local"), _parameters("percentile")
    assert base["preprocessing"]["equalize"]["method"] == "percentile"
    assert base["preprocessing"]["equalize"]["percentiles"] == [1.0, 99.8]
    own["training"].pop("checkpoint_dir"), base["training"].pop("checkpoint_dir")
    for section in ("training", "preprocessing", "segmentation", "split", "augmentation"):
        assert own[section] == base[section], section


def test_the_seed43_environment_reruns_the_default_recipe_with_other_seeds_on_the_same_split():
    base, own = _parameters("local"), _parameters("seed43")
    assert (own["training"]["seed"], own["augmentation"]["seed"]) == (43, 43)
    assert base["training"]["seed"] == base["augmentation"]["seed"] == 42
    own["training"].pop("checkpoint_dir"), base["training"].pop("checkpoint_dir")
    for section in ("training", "augmentation"):
        own[section].pop("seed"), base[section].pop("seed")
    for section in ("training", "preprocessing", "segmentation", "split", "augmentation"):
        assert own[section] == base[section], section


def test_the_oversample_environment_changes_the_sampling_not_the_compute():
    """More copies of the rare modalities, and the base's step count: the 470 training
    images x 8 copies / batch 8 of the stage1_train grouped split (3 passes = 1,410 steps)."""
    base, own = _parameters("local"), _parameters("oversample")
    copies = own["augmentation"]["copies_per_modality"]
    assert base["augmentation"]["copies_per_modality"] == {}
    assert set(copies) == {"stained", "brightfield"}
    assert min(copies.values()) > base["augmentation"]["copies_per_image"]
    assert base["training"]["steps_per_epoch"] is None
    steps = own["training"]["steps_per_epoch"]
    assert steps * base["training"]["batch_size"] == 470 * base["augmentation"]["copies_per_image"]
    own["augmentation"]["copies_per_modality"] = {}
    own["training"]["steps_per_epoch"] = None
    own["training"].pop("checkpoint_dir"), base["training"].pop("checkpoint_dir")
    for section in ("training", "preprocessing", "segmentation", "split", "augmentation"):
        assert own[section] == base[section], section


@pytest.mark.parametrize(
    "env, attention, channel_expansion, aspp",
    [
        ("no_attention", "none", False, True),
        ("gap", "gap", True, True),
        ("no_ce", "sap", False, True),
        ("no_aspp", "sap", True, False),
    ],
)
def test_the_ablation_environments_change_the_attention_and_nothing_else(
    env, attention, channel_expansion, aspp
):
    """The ablations of the paper's components (no attention at all; GAP for SAP; no channel
    expansion; no ASPP), each on the default recipe's own data (the percentile environment's
    files, as nothing upstream of the network changes)."""
    components = ("attention", "channel_expansion", "aspp")
    base, own = _parameters("local"), _parameters(env)
    model = own["training"]["model"]
    assert tuple(model[key] for key in components) == (attention, channel_expansion, aspp)
    assert tuple(base["training"]["model"][key] for key in components) == ("sap", True, True)
    shared = _catalog(env)["augmented_images"]["filepath"]
    assert shared == _catalog("percentile")["augmented_images"]["filepath"]
    model.update(attention="sap", channel_expansion=True, aspp=True)
    own["training"].pop("checkpoint_dir"), base["training"].pop("checkpoint_dir")
    for section in ("training", "preprocessing", "segmentation", "split", "augmentation"):
        assert own[section] == base[section], section


def test_the_second_seed_of_the_aspp_ablation_is_the_seed43_recipe_without_aspp():
    """ASPP off with seeds 43, on the seed43 environment's data: the pair of `seed43` as
    `no_aspp` is of the default (seeds 42)."""
    seed43, own = _parameters("seed43"), _parameters("no_aspp_seed43")
    assert (own["training"]["seed"], own["augmentation"]["seed"]) == (43, 43)
    assert own["training"]["model"]["aspp"] is False is not seed43["training"]["model"]["aspp"]
    shared = _catalog("no_aspp_seed43")["augmented_images"]["filepath"]
    assert shared == _catalog("seed43")["augmented_images"]["filepath"]
    own["training"]["model"]["aspp"] = seed43["training"]["model"]["aspp"]
    own["training"].pop("checkpoint_dir"), seed43["training"].pop("checkpoint_dir")
    for section in ("training", "preprocessing", "segmentation", "split", "augmentation"):
        assert own[section] == seed43[section], section


def test_the_split_environments_change_only_the_split_protocol():
    base = _parameters("local")["split"]
    random_split = _parameters("random_split")["split"]
    assert random_split["grouping"]["enabled"] is False
    assert {k: v for k, v in random_split.items() if k != "grouping"} == {
        k: v for k, v in base.items() if k != "grouping"
    }
    assert _parameters("logo")["split"] == base  # the group is given with --params
    assert base["grouping"]["enabled"] is True and base["hold_out"] is None


def test_the_stain_jitter_environment_changes_only_the_augmentation_switch():
    base, own = _parameters("local"), _parameters("stain_jitter")
    assert base["augmentation"]["stain_jitter"]["enabled"] is False
    assert own["augmentation"]["stain_jitter"] == {
        **base["augmentation"]["stain_jitter"],
        "enabled": True,
    }
    own["augmentation"]["stain_jitter"]["enabled"] = False
    own["training"].pop("checkpoint_dir"), base["training"].pop("checkpoint_dir")
    for section in ("training", "preprocessing", "segmentation", "split", "augmentation"):
        assert own[section] == base[section], section

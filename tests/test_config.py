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

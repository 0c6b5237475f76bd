"""Where the model runs: the device report, and data-parallel training on two virtual CPU
devices under JAX giving the single-device weights."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from nucleus_segmentation.model.distribution import (
    batch_multiple,
    device_report,
    distribution_scope,
)

TWO_DEVICES = textwrap.dedent(
    """
    import keras
    import numpy as np
    from nucleus_segmentation.model import UNetConfig, build_attention_unet
    from nucleus_segmentation.model.distribution import (
        batch_multiple, device_report, distribution_scope,
    )
    from nucleus_segmentation.model.losses import PixelWeightedCrossEntropy
    from nucleus_segmentation.model.predict import predict_probabilities

    assert device_report() == {
        "backend": "jax", "devices": "cpu:0,cpu:1", "precision": "float32"
    }, device_report()
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1)).astype("float32")
    y = (rng.random((4, 32, 32)) > 0.6).astype("int32")
    image = (x[0, ..., 0] * 255).astype(np.uint8)

    def one_step(name):
        keras.utils.set_random_seed(3)
        with distribution_scope(name, 4) as distribution:
            model = build_attention_unet(UNetConfig(base_filters=4, aspp_filters=8))
            model.compile(
                optimizer=keras.optimizers.SGD(0.5), loss=PixelWeightedCrossEntropy(None, 1.0)
            )
            before = [np.asarray(w) for w in model.get_weights()]
            model.train_on_batch(x, y)  # one step on the global batch of 4
            shards = len(model.weights[0].value.sharding.device_set)
            # one image: a batch of 1, filled up to the 2 devices and cut back
            probability = predict_probabilities(model, [image], 16, 4)[0]
            return before, [np.asarray(w) for w in model.get_weights()], probability, (
                batch_multiple(), shards, distribution is None
            )

    before_1, single, p1, info_1 = one_step("none")
    before_2, parallel, p2, info_2 = one_step("data_parallel")
    assert info_1 == (1, 1, True) and info_2 == (2, 2, False), (info_1, info_2)
    for a, b in zip(before_1, before_2):
        np.testing.assert_array_equal(a, b)  # the same start
    assert any(not np.allclose(a, b) for a, b in zip(before_1, single))  # the step moved them
    # Equal up to float32 summation order over the shards: one element of 144 differed by
    # 4.2e-5 on an AVX-512 CPU (lr 0.5 scales it); a step not averaged over the shards
    # (summed) is off by the step itself, which moves the weights by up to 0.46 (median over
    # the weight tensors of each one's largest move: 7e-3).
    for a, b in zip(single, parallel):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-4)
    np.testing.assert_allclose(p1, p2, atol=1e-3)  # from weights equal to ~1e-4
    print("ok")
    """
)


def _jax(script: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "KERAS_BACKEND": "jax", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_one_data_parallel_step_on_two_devices_gives_the_single_device_weights():
    result = _jax(TWO_DEVICES, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-4000:]


def test_the_device_report_and_the_distribution_checks_on_this_backend():
    import keras

    report = device_report()
    assert report["backend"] == keras.backend.backend()
    assert report["devices"].split(",")[0].startswith(("cpu", "gpu"))
    assert report["precision"] == "float32"
    with distribution_scope("none", 8) as distribution:
        assert distribution is None and batch_multiple() == 1
    with pytest.raises(ValueError, match="must be one of"), distribution_scope("ddp", 8):
        pass
    if keras.backend.backend() != "jax":
        with (
            pytest.raises(ValueError, match="needs the JAX backend"),
            distribution_scope("data_parallel", 8),
        ):
            pass

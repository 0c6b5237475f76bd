"""Project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

from omegaconf.resolvers import oc

from nucleus_segmentation.hooks import (
    MlflowArtifactHooks,
    NodeTimingHooks,
    ParallelHooks,
    ProgressHooks,
)
from nucleus_segmentation.tracking import MlflowRunHooks

# kedro-mlflow registers its own hooks through its entry point; these are the project's.
HOOKS = (
    NodeTimingHooks(),
    ProgressHooks(),
    ParallelHooks(),
    MlflowRunHooks(),
    MlflowArtifactHooks(),
)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # ${oc.env:VAR, default} lets the environment choose e.g. the MLflow tracking URI.
    "custom_resolvers": {"oc.env": oc.env},
    # Environments (conf/baseline, conf/paper) override single nested keys, not whole groups.
    "merge_strategy": {"parameters": "soft", "mlflow": "soft"},
}

"""Project hooks: node timings in the log, so slow stages are visible in every run."""

from __future__ import annotations

import logging
import time
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node

logger = logging.getLogger(__name__)


class NodeTimingHooks:
    """Logs ``Node '<name>' took X.XX s`` after every node (load and save included)."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        started = self._started.pop(node.name, None)
        if started is not None:
            logger.info("Node '%s' took %.2f s", node.name, time.perf_counter() - started)

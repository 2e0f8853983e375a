"""A model deployment that raises for every frame while a flag file exists (fault drill 3).

It is ``GRDNetModel`` itself (same batching, fail-safe and health check) around a predictor that
raises on every real frame — a call with ROIs; the replica's warm-up (no ROIs) still passes, so a
replacement replica can start while the fault lasts. Deleting the flag file ends the fault. The
class is pickled by value (Ray workers need not import the tests), and ``inference.app`` is
pointed at it for one deployment, so the app is built by the project's own builder.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from ray import serve

from inference.model_deployment import GRDNetModel


class DrillModelError(RuntimeError):
    """What the flaky predictor raises."""


class FlagFailingPredictor:
    """Delegates to the real predictor; ``predict`` with ROIs raises while ``flag`` exists."""

    def __init__(self, inner: Any, flag: str) -> None:
        self._inner = inner
        self._flag = flag

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def predict(self, images: Sequence[Any], rois: Sequence[Any] | None = None) -> Any:
        if rois is not None and os.path.exists(self._flag):
            raise DrillModelError(f"drill: the model fails for every frame while {self._flag} exists")
        return self._inner.predict(images, rois)


class _FlakyGRDNet(GRDNetModel.func_or_class):  # type: ignore[name-defined,misc]
    flag: str = ""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._predictor = FlagFailingPredictor(self._predictor, type(self).flag)


def flaky_deployment(flag: str) -> Any:
    """A Serve deployment named ``GRDNetModel`` whose predictor fails while ``flag`` exists."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cls = type("FlakyGRDNet", (_FlakyGRDNet,), {"flag": flag, "__module__": __name__})
    return serve.deployment(name="GRDNetModel")(cls)

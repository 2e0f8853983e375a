"""The ROI applied to a frame: from its recipe (config ``recipes`` / ``default_recipe``).

``roi`` of a :class:`~inference.config.RecipeSettings`:

* ``recipe`` — the recipe's fixed ROI, ``ingest.simulator.roi_mask_for_recipe(recipe, size)``;
* ``none`` — the whole frame (no ROI);
* anything else — a PNG file, non-zero = ROI, resized (nearest) to the frame.

Masks are cached per (recipe, height, width), at most ``limits.roi_cache_size`` of them (least
recently used dropped first: a stream of odd frame sizes cannot grow memory). The ROI id stored with each result says which one was used (``recipe:vials``, ``none``,
``file:<name>``).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from inference.config import ServeAppConfig


class RoiError(ValueError):
    """No ROI can be built for a recipe/frame size."""


class RoiProvider:
    def __init__(self, cfg: ServeAppConfig):
        self._cfg = cfg
        self._size = cfg.limits.roi_cache_size
        self._cache: OrderedDict[tuple[str, int, int], tuple[np.ndarray | None, str]] = OrderedDict()

    def get(self, recipe: str, height: int, width: int) -> tuple[np.ndarray | None, str]:
        key = (recipe, height, width)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._build(recipe, height, width)
            self._cache[key] = hit
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return hit

    def _build(self, recipe: str, height: int, width: int) -> tuple[np.ndarray | None, str]:
        spec = self._cfg.recipe(recipe).roi
        if spec == "none":
            return None, "none"
        if spec == "recipe":
            from ingest.simulator import SimulatorError, roi_mask_for_recipe

            try:
                mask = np.asarray(roi_mask_for_recipe(recipe, max(height, width)))
            except (SimulatorError, KeyError, ValueError) as exc:
                raise RoiError(f"recipe {recipe!r}: no fixed ROI ({exc})") from exc
            roi_id = f"recipe:{recipe}"
        else:
            path = Path(spec)
            img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise RoiError(f"recipe {recipe!r}: ROI file {path} is missing or not an image")
            mask = img
            roi_id = f"file:{path.name}"
        if mask.shape != (height, width):
            mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        mask = mask > 0
        mask.setflags(write=False)
        return mask, roi_id

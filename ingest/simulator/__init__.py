"""Production-line simulator: blow-fill-seal vial strips with known ground truth.

Renders strips of five liquid-filled plastic vials under a backlight with pose, light, focus and
noise variation, defects with exact masks inside and outside the ROI, MVTec-layout datasets, and
simulated cameras (a :class:`ingest.source.FrameSource`). Each module's docstring says how its
part works: config, template (the product), defects, render, camera, dataset, preview, cli.
"""

from ingest.simulator.camera import SimulatedCamera, SimulatedLine, TruthStore, interleave
from ingest.simulator.config import COSMETIC, DEFECT_TYPES, GOOD, RECIPES, Recipe
from ingest.simulator.dataset import generate_dataset
from ingest.simulator.errors import SimulatorError
from ingest.simulator.render import RenderedPart, Renderer, render_part, roi_mask_for_recipe

__all__ = [
    "COSMETIC",
    "DEFECT_TYPES",
    "GOOD",
    "RECIPES",
    "Recipe",
    "RenderedPart",
    "Renderer",
    "SimulatedCamera",
    "SimulatedLine",
    "SimulatorError",
    "TruthStore",
    "generate_dataset",
    "interleave",
    "render_part",
    "roi_mask_for_recipe",
]

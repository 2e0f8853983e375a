"""Configuration of the simulated product, scene and defects (pydantic, ``extra="forbid"``).

Every length is a fraction of the image side ``S`` so that one recipe renders at any size; the
renderer converts to pixels once, when it builds its template. The scale is about 0.26 mm per
pixel at ``S = 256`` (a 60 mm strip across ~230 px), so the paper's 100–1000 µm defects are 0.4–4
px there; defects are drawn at least ~1.5 px across so that they survive the camera blur at any
size (the lower end of the paper's range is below one pixel at 256 px and is not simulated).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ingest.simulator.errors import SimulatorError

#: Test types written by :func:`ingest.simulator.generate_dataset`, in this order.
DEFECT_TYPES: tuple[str, ...] = (
    "particle",
    "spot",
    "scratch",
    "crack",
    "bubble",
    "short_fill",
    "deformed",
)
#: Defects placed outside the ROI: real, visible, but not rejects (label "good").
COSMETIC = "cosmetic_outside_roi"
GOOD = "good"
#: Physical kinds a cosmetic (outside-ROI) defect is drawn as.
COSMETIC_KINDS: tuple[str, ...] = ("spot", "scratch", "particle", "bubble")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StripSpec(_Model):
    """Geometry of a blow-fill-seal strip, as fractions of the image side (y grows downwards)."""

    n_vials: int = Field(5, ge=1, le=8)
    pitch: float = 0.176  # centre-to-centre distance of the vials
    body_half_width: float = 0.066
    wall: float = 0.011  # plastic wall thickness
    tab_top: float = 0.035  # twist-off tab (flat sheet with an embossed number)
    tab_bottom: float = 0.215
    tab_half_width: float = 0.058
    neck_bottom: float = 0.285
    neck_half_width: float = 0.026
    shoulder_bottom: float = 0.365
    body_bottom: float = 0.862  # start of the rounded bottom
    bottom_round: float = 0.05
    web_top: float = 0.33  # flat web joining neighbouring bodies
    flange_top: float = 0.905  # embossed base band under the vials
    flange_bottom: float = 0.975
    fill_level: float = 0.47  # nominal y of the bottom of the meniscus
    fill_tolerance: float = 0.014  # accepted +- deviation of the fill level
    meniscus_height: float = 0.013  # how far the meniscus climbs at the wall
    lot_text: str = "LOT 24A17   EXP 11/2027"


class SceneSpec(_Model):
    """What varies from frame to frame: pose, lighting, focus, noise (ranges are uniform)."""

    shift: float = 0.018  # max |translation| as a fraction of S
    rotation_deg: float = 1.5
    scale: float = 0.015  # max relative scale change
    light: tuple[float, float] = (196.0, 236.0)  # backlight level in gray values
    light_gradient: float = 0.08  # max relative brightness change across the frame
    blur_sigma: tuple[float, float] = (0.55, 1.1)  # at S = 256; scaled with S
    read_noise: float = 1.6  # gray values
    shot_noise: float = 0.018  # variance per gray value


class Recipe(_Model):
    """A product recipe: the strip geometry and which region is the ROI.

    ``roi`` = ``"meniscus"`` (default): a band around the meniscus of every vial, covering the fill
    tolerance; ``"body"``: the whole liquid body of every vial; ``"strip"``: the whole part.
    """

    name: str
    strip: StripSpec = StripSpec()
    scene: SceneSpec = SceneSpec()
    roi: Literal["meniscus", "body", "strip"] = "meniscus"
    roi_margin: float = 0.012  # band margin beyond the meniscus extremes
    cosmetic_margin: float = 0.018  # extra clearance of outside-ROI defects beyond jitter + blur


RECIPES: dict[str, Recipe] = {
    "vials": Recipe(name="vials"),
    "vials_body": Recipe(name="vials_body", roi="body"),
    "vials_strip": Recipe(name="vials_strip", roi="strip"),
}


def get_recipe(recipe: str | Recipe) -> Recipe:
    """The :class:`Recipe` named ``recipe`` (or ``recipe`` itself)."""
    if isinstance(recipe, Recipe):
        return recipe
    try:
        return RECIPES[recipe]
    except KeyError:
        raise SimulatorError(
            f"unknown recipe {recipe!r}; known: {', '.join(sorted(RECIPES))}"
        ) from None

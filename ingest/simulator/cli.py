"""``grdline simulate``: write a simulated dataset or a contact sheet.

``grdline simulate dataset --out ROOT --category vials --train N --test M [--seed --size
--channels --recipe --overwrite]`` writes the MVTec-layout dataset described in
:mod:`ingest.simulator.dataset`; ``grdline simulate preview --out sheet.png`` writes a contact
sheet (:mod:`ingest.simulator.preview`). Rendering modules are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="production-line simulator (datasets, previews)")
    sub = p.add_subparsers(dest="simulate_command", required=True, metavar="SUBCOMMAND")

    d = sub.add_parser("dataset", help="write an MVTec-layout dataset with ROI files and truth")
    d.add_argument("--out", required=True, help="dataset root (the category folder goes inside)")
    d.add_argument("--category", default="vials")
    d.add_argument("--train", type=int, default=200, help="good training images")
    d.add_argument("--test", type=int, default=90, help="test images over all types")
    d.add_argument(
        "--types",
        default=None,
        help="comma-separated test types (default: good and every defect type, plus "
        "cosmetic_outside_roi)",
    )
    _common(d)
    d.add_argument(
        "--overwrite", action="store_true", help="replace an existing simulated category folder"
    )
    d.set_defaults(func=_dataset)

    v = sub.add_parser("preview", help="write a contact sheet PNG of every type")
    v.add_argument("--out", default="simulator_preview.png")
    v.add_argument("--samples", type=int, default=2, help="samples per type")
    _common(v)
    v.set_defaults(func=_preview)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--channels", type=int, choices=(1, 3), default=1)
    p.add_argument("--recipe", default="vials")


def _dataset(args: argparse.Namespace) -> int:
    from ingest.simulator.dataset import TEST_TYPES, generate_dataset
    from ingest.simulator.errors import SimulatorError

    types = TEST_TYPES if args.types is None else tuple(t.strip() for t in args.types.split(","))
    try:
        m = generate_dataset(
            args.out,
            args.category,
            args.train,
            args.test,
            args.seed,
            args.size,
            args.channels,
            recipe=args.recipe,
            test_types=types,
            overwrite=args.overwrite,
        )
    except SimulatorError as exc:
        log.error("%s", exc)
        return 2
    n_rej = sum(i.label for i in m.images)
    log.info("wrote %d images (%d rejects) to %s/%s", len(m.images), n_rej, args.out, args.category)
    return 0


def _preview(args: argparse.Namespace) -> int:
    from ingest.simulator.errors import SimulatorError
    from ingest.simulator.preview import write_contact_sheet

    try:
        out = write_contact_sheet(
            args.out,
            seed=args.seed,
            size=args.size,
            channels=args.channels,
            samples=args.samples,
            recipe=args.recipe,
        )
    except SimulatorError as exc:
        log.error("%s", exc)
        return 2
    log.info("wrote %s", out)
    return 0

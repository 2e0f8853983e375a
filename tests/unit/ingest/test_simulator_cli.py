"""``grdline simulate dataset|preview`` through the real command entry point."""

from __future__ import annotations

import cv2

from inference.cli import build_parser, main


def test_simulate_is_registered():
    args = build_parser().parse_args(["simulate", "dataset", "--out", "x", "--train", "3"])
    assert args.train == 3 and args.category == "vials" and callable(args.func)


def test_dataset_command_writes_the_layout(tmp_path):
    rc = main(
        [
            "simulate",
            "dataset",
            "--out",
            str(tmp_path),
            "--category",
            "vials",
            "--train",
            "3",
            "--test",
            "10",
            "--size",
            "64",
            "--seed",
            "2",
        ]
    )
    assert rc == 0
    cat = tmp_path / "vials"
    assert len(list((cat / "train" / "good").glob("*.png"))) == 3
    assert sum(1 for _ in (cat / "test").rglob("*.png")) == 10
    assert (cat / "ground_truth" / "particle" / "000_mask.png").is_file()
    assert (cat / "roi" / "default.png").is_file() and (cat / "manifest.json").is_file()
    # a second run into the same folder fails cleanly (exit code 2) unless --overwrite
    again = [
        "simulate",
        "dataset",
        "--out",
        str(tmp_path),
        "--train",
        "1",
        "--test",
        "1",
        "--size",
        "64",
    ]
    assert main(again) == 2
    assert main([*again, "--overwrite"]) == 0
    picked = ["simulate", "dataset", "--out", str(tmp_path / "p"), "--train", "1", "--test", "4"]
    assert main([*picked, "--size", "64", "--types", "good,crack"]) == 0
    assert sorted(p.name for p in (tmp_path / "p" / "vials" / "test").iterdir()) == [
        "crack",
        "good",
    ]
    assert main([*picked, "--size", "64", "--types", "dirt"]) == 2


def test_preview_command_writes_a_contact_sheet(tmp_path):
    out = tmp_path / "sheet.png"
    assert main(["simulate", "preview", "--out", str(out), "--size", "64", "--samples", "1"]) == 0
    sheet = cv2.imread(str(out))
    assert sheet.shape == (9 * 64, 3 * 64, 3)

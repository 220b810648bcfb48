"""``python -m zoo.vision.stereo.predict`` on a tiny model: argument checks, PFM + PNG outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.hub import create_model, model_entry, save_pretrained
from zoo.vision.stereo.data import read_pfm, render_pair
from zoo.vision.stereo.predict import main

TINY = {**(model_entry("matchstereo_demo").test_overrides or {}), "attention_backend": "reference"}


def _pair(root: Path, size: tuple[int, int] = (100, 130)) -> tuple[Path, Path]:
    pair = render_pair(np.random.default_rng(0), *size, max_disp=12.0, num_shapes=2)
    paths = []
    for key in ("left", "right"):
        path = root / f"{key}.png"
        Image.fromarray((pair[key] * 255).round().astype(np.uint8)).save(path)
        paths.append(path)
    return paths[0], paths[1]


def _lightning_ckpt(root: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = create_model("matchstereo_demo", **TINY)
    ckpt = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"model_name": "matchstereo_demo", "overrides": TINY}}
    path = root / "last.ckpt"
    torch.save(ckpt, path)
    return path, model


def test_predict_writes_pfm_and_png_of_the_input_size(tmp_path):
    left, right = _pair(tmp_path)
    ckpt, model = _lightning_ckpt(tmp_path)
    out, png = main(["--checkpoint", str(ckpt), "--left", str(left), "--right", str(right), "--out", str(tmp_path / "d.pfm")])
    disparity = read_pfm(out)
    assert disparity.shape == (100, 130) and np.isfinite(disparity).all()
    with Image.open(png) as img:
        assert img.size == (130, 100) and img.mode == "RGB"
    # the same network on the same (padded) input, independently
    x = [torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255).permute(2, 0, 1)[None] for p in (left, right)]
    x = [torch.nn.functional.pad(t, (0, 30, 0, 28), mode="replicate") for t in x]
    with torch.no_grad():
        expected = model.eval()(*x)["disparity"][0, 0, :100, :130].numpy()
    np.testing.assert_allclose(disparity, expected, rtol=1e-4, atol=1e-4)
    # a pretrained directory and --scale
    directory = save_pretrained(model, tmp_path / "pretrained", name="matchstereo_demo", config=model.config)
    out, _ = main(["--checkpoint", str(directory), "--left", str(left), "--right", str(right), "--out", str(tmp_path / "h.pfm"),
                   "--scale", "1.5", "--png", str(tmp_path / "h_colour.png")])
    assert read_pfm(out).shape == (150, 195) and (tmp_path / "h_colour.png").exists()


@pytest.mark.parametrize(
    "change, match",
    [
        ({"--out": "d.png"}, "--out must end in .pfm"),
        ({"--left": "missing.png"}, "--left .*missing.png: no such file"),
        ({"--right": "right.txt"}, "expected an image"),
        ({"--checkpoint": "nothere.ckpt"}, "--checkpoint nothere.ckpt: no such file"),
        ({"--scale": "0"}, "--scale > 0"),
        ({"--right": "small.png"}, "is 130 x 100 but --right .*small.png is 60 x 40"),
    ],
    ids=["out-suffix", "missing-left", "right-suffix", "missing-checkpoint", "scale", "sizes"],
)
def test_predict_checks_arguments_before_loading(tmp_path, monkeypatch, change, match):
    monkeypatch.chdir(tmp_path)
    _pair(tmp_path)
    (tmp_path / "right.txt").write_text("x")
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    args = {"--checkpoint": "matchstereo_demo", "--left": "left.png", "--right": "right.png", "--out": "d.pfm", **change}
    with pytest.raises(SystemExit, match=match):
        main([x for kv in args.items() for x in kv])

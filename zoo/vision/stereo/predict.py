"""The disparity of one rectified image pair, written as PFM and as a colourized PNG.

    python -m zoo.vision.stereo.predict --checkpoint runs/matchstereo_demo/version_0/checkpoints/last.ckpt \\
        --left im0.png --right im1.png --out disp.pfm
    python -m zoo.vision.stereo.predict --official matchstereo_t --checkpoint matchstereo_tiny_fsd.pth \\
        --left im0.png --right im1.png --out disp.pfm --scale 0.5

``--checkpoint`` is a Lightning ``.ckpt`` written by ``python -m zoo.vision.train`` (its ``model_name`` and
``overrides`` hyper-parameters rebuild the network), a pretrained directory (``model.safetensors`` +
``config.json``) or a registered name with a shipped checkpoint; with ``--official NAME`` it is the paper's
own checkpoint, converted strictly by ``zoo.load_official(NAME, path)``. The images are read as RGB in
[0, 1], optionally resized by ``--scale`` (the disparity is then in pixels of the resized image), padded to a
multiple of 32 and the prediction cropped back. ``OUT.pfm`` holds the disparity (float32, left-image
reference, little-endian, rows stored bottom to top as PFM does); ``OUT.png`` beside it (or ``--png``) its
colour map on ``0 .. --vmax`` (default: the prediction's maximum). Every argument is checked before the model
loads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from zoo.hub import create_model, load_official, load_pretrained, load_weights_into

from .data import read_image, write_pfm
from .figures import colorize
from .module import infer_disparity

__all__ = ["build_parser", "check_args", "load_network", "predict_pair", "main"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zoo.vision.stereo.predict", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="Lightning .ckpt, pretrained dir, registered name, or (--official) the paper's .pth")
    p.add_argument("--official", default=None, metavar="NAME", help="--checkpoint is an official checkpoint of this model (matchstereo_t|s|b)")
    p.add_argument("--left", required=True, help="left image")
    p.add_argument("--right", required=True, help="right image (rectified to the left)")
    p.add_argument("--out", required=True, help="output .pfm (the colourized .png goes beside it)")
    p.add_argument("--png", default=None, help="colourized disparity path (default: --out with .png)")
    p.add_argument("--scale", type=float, default=1.0, help="resize both images by this factor first")
    p.add_argument("--vmax", type=float, default=None, help="disparity at the top of the colour map (default: the maximum)")
    p.add_argument("--pad_multiple", type=int, default=32)
    p.add_argument("--device", default="cpu")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before loading a model (so a typo costs no minutes)."""
    for flag in ("left", "right"):
        path = Path(getattr(args, flag))
        if not path.is_file():
            raise ValueError(f"--{flag} {path}: no such file")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"--{flag} {path}: expected an image ({', '.join(IMAGE_SUFFIXES)}), got suffix {path.suffix!r}")
    with Image.open(args.left) as a, Image.open(args.right) as b:
        if a.size != b.size:
            raise ValueError(f"--left {args.left} is {a.size[0]} x {a.size[1]} but --right {args.right} is {b.size[0]} x {b.size[1]}")
    if Path(args.out).suffix.lower() != ".pfm":
        raise ValueError(f"--out must end in .pfm, got {args.out}")
    if args.png is not None and Path(args.png).suffix.lower() != ".png":
        raise ValueError(f"--png must end in .png, got {args.png}")
    if args.scale <= 0 or args.pad_multiple < 1 or (args.vmax is not None and args.vmax <= 0):
        raise ValueError(f"need --scale > 0, --pad_multiple >= 1 and --vmax > 0; got {args.scale}, {args.pad_multiple}, {args.vmax}")
    ckpt = Path(args.checkpoint)
    if args.official is not None and not ckpt.is_file():
        raise ValueError(f"--checkpoint {ckpt}: no such file (the official checkpoint of {args.official})")
    if args.official is None and ckpt.suffix and not ckpt.exists():
        raise ValueError(f"--checkpoint {ckpt}: no such file or directory")


def load_network(checkpoint: str, official: str | None = None) -> nn.Module:
    """The network of a Lightning ``.ckpt``, a pretrained dir or name, or an official checkpoint."""
    if official is not None:
        return load_official(official, checkpoint)
    path = Path(checkpoint)
    if path.is_file() and path.suffix == ".ckpt":
        from zoo.hub.checkpoints import _torch_load  # weights_only=True: hyper-parameters are plain data

        hparams = dict((_torch_load(path) or {}).get("hyper_parameters") or {})
        if not isinstance(hparams.get("model_name"), str):
            raise ValueError(f"{path}: no 'model_name' hyper-parameter; was it written by zoo.vision.train with StereoMatcher?")
        model = create_model(hparams["model_name"], **(hparams.get("overrides") or {}))
        return load_weights_into(model, path, prefix="model.")
    if path.is_dir() or not path.suffix:
        return load_pretrained(str(checkpoint))
    raise ValueError(f"--checkpoint {checkpoint}: expected a Lightning .ckpt, a pretrained directory or a registered name")


@torch.no_grad()
def predict_pair(network: nn.Module, left: np.ndarray, right: np.ndarray, scale: float = 1.0, pad_multiple: int = 32,
                 device: str = "cpu") -> np.ndarray:
    """Disparity ``(H', W')`` float32 of images ``(H, W, 3)`` in [0, 1] (``H' = round(H * scale)``)."""
    pair = [torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float().to(device) for x in (left, right)]
    if scale != 1.0:
        size = (max(1, round(left.shape[0] * scale)), max(1, round(left.shape[1] * scale)))
        pair = [F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1) for x in pair]
    network = network.to(device).eval()
    return infer_disparity(network, pair[0], pair[1], pad_multiple)["disparity"][0, 0].float().cpu().numpy()


def main(argv: list[str] | None = None) -> tuple[Path, Path]:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    network = load_network(args.checkpoint, args.official)
    disparity = predict_pair(network, read_image(args.left), read_image(args.right), args.scale, args.pad_multiple, args.device)
    out = write_pfm(args.out, disparity)
    png = Path(args.png) if args.png else out.with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(colorize(disparity, args.vmax)).save(png)
    print(f"disparity {disparity.shape[1]} x {disparity.shape[0]}, {disparity.min():.2f} .. {disparity.max():.2f} px -> {out}, {png}")
    return out, png


if __name__ == "__main__":
    main()

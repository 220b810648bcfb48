"""Float64 output parity of ``zoo``'s Plain-DETR with the official code (impiga/Plain-DETR).

    python benchmarks/plain_detr_parity.py --official /path/to/Plain-DETR [--configs boxrpe ape reparam]
        [--backend auto|sdpa] [--write]

Without ``--official`` (a checkout of https://github.com/impiga/Plain-DETR) it prints why and exits 0:
nothing of the official code is shipped or downloaded. With it, the script

1. copies the checkout to a temporary folder and turns every hard-coded ``float32`` there into
   ``float64`` (``.float()`` -> ``.double()``, ``torch.float32`` -> ``torch.float64``; the official model
   casts its SwinV2 attention, LayerNorm and position embeddings to float32, so it cannot run in float64
   as released); if ``wandb`` is not installed, an empty module stands in for it (``main.py`` imports it);
2. builds the official model from a released config's flags (:data:`CONFIGS`: ``boxrpe``, ``ape`` and the
   MIM ``boxrpe_reparam`` one; ``drop_path_rate 0``, no pretrained backbone) on CPU in float64, seeded;
3. perturbs every official parameter (``p += 0.02 N(0, 1)``, norm weights ``1 + 0.1 N(0, 1)``) so that no
   path is trivially zero (the released init zeroes the box heads' last layers and the SwinV2 post-norm
   scales), converts the state dict with ``zoo``'s converter (``convert_official`` + the strict filter, the
   path of ``zoo.load_official``) into the matching ``zoo`` model built and then made
   ``.double()`` before loading (the default dtype stays float32 for ``zoo``: a hard-coded float32 in it
   would show);
4. feeds both the same two images (the second padded) at the smallest square size that each mode
   allows and compares every output: eval (300 one-to-one queries, the official ``evaluate``'s
   settings) at 97x97, training mode (300 + 1500 queries, hybrid matching) at 289x289, and eval
   once more at a larger 320x480. With ``reparam`` the official boxes are pixels: ``zoo``'s (normalized
   by the valid size) are scaled back before the comparison, and the deltas are compared as well.

``--backend`` is ``zoo``'s attention backend: ``auto`` takes BoxRPB's feature-column form through SDPA
(on CPU too), ``reference`` the materialized bias. ``--write`` stores the table in
``benchmarks/results/plain_detr_parity_cpu.md`` (``plain_detr_parity_<backend>_cpu.md`` for another backend).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: name -> (official config script, zoo model, overrides that make it that config)
CONFIGS = {
    "boxrpe": ("swinv2_small_sup_pt_boxrpe.sh", "plain_detr_swinv2_s_boxrpb", {}),
    "ape": ("swinv2_small_sup_pt_ape.sh", "plain_detr_swinv2_s_ape", {}),
    "reparam": ("swinv2_small_mim_pt_boxrpe_reparam.sh", "plain_detr_swinv2_s_boxrpb",
                {"pretrained_window_sizes": (12, 12, 12, 6), "reparam": True, "position_embedding": "sine_unnorm"}),
}

#: (mode, padded input size, the second image's valid size)
CASES = (("eval", (97, 97), (80, 64)), ("train", (289, 289), (256, 224)), ("eval", (320, 480), (288, 400)))


def float64_copy(official: Path, into: Path) -> Path:
    """The official checkout copied to ``into`` with its float32 casts turned into float64."""
    dst = into / "official"
    shutil.copytree(official, dst, ignore=shutil.ignore_patterns(".git", "exps", "*.pth"))
    for path in [*dst.glob("models/*.py"), *dst.glob("util/*.py")]:
        text = path.read_text()
        path.write_text(text.replace(".float()", ".double()").replace("torch.float32", "torch.float64"))
    try:
        import wandb  # noqa: F401
    except ImportError:
        (dst / "_stubs" / "wandb").mkdir(parents=True)
        (dst / "_stubs" / "wandb" / "__init__.py").write_text("")
    return dst


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def official_args(root: Path, config: str) -> list[str]:
    """The flags of the config's ``configs/*.sh`` without the paths."""
    script = (root / "configs" / CONFIGS[config][0]).read_text().split("main.py", 1)[1]
    argv: list[str] = []
    for flag in re.findall(r"(--\w+(?: [^\s\\-][^\s\\]*)?)", script):
        argv += flag.split()
    for name in ("--output_dir", "--pretrained_backbone_path"):
        i = argv.index(name)
        del argv[i : i + 2]
    return [a for a in argv if not a.startswith("${")] + ["--device", "cpu", "--drop_path_rate", "0.0"]


def build_official(root: Path, config: str) -> torch.nn.Module:
    if str(root) not in sys.path:
        sys.path[:0] = [str(root), str(root / "_stubs")]
    from main import get_args_parser  # the official entry point, from the float64 copy
    from models import build_model

    args = get_args_parser().parse_args(official_args(root, config))
    args.pretrained_backbone_path = None
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        model, _, _ = build_model(args)
    model = model.double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "logit_scale" in name:
                continue
            if p.dim() == 1 and name.endswith("weight") and ("norm" in name or name.endswith(".ln.weight")):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            else:
                p.add_(0.02 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def inputs(size: tuple[int, int], valid: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64)
    mask = torch.zeros(2, *size, dtype=torch.bool)
    mask[1, valid[0] :] = True
    mask[1, :, valid[1] :] = True
    images[mask[:, None].expand_as(images)] = 0.0
    return images, mask


def compare(official: torch.nn.Module, ours: torch.nn.Module, mode: str, size, valid, seed: int) -> list[object]:
    from util.misc import NestedTensor  # the official input type

    images, mask = inputs(size, valid, seed)
    reparam = ours.config.reparam
    # reparam: the official boxes are pixels of the valid image; zoo's are normalized by it
    hw = torch.tensor([[size[1], size[0]], [valid[1], valid[0]]], dtype=torch.float64).repeat(1, 2)[:, None]  # (B, 1, 4)
    keys = ("pred_logits", "pred_boxes") + (("pred_deltas", "pred_boxes_old") if reparam else ())

    def max_diff(a: dict, b: dict, suffix: str = "", only: tuple[str, ...] = keys) -> float:
        worst = 0.0
        for k in only:
            theirs, mine = a[k + suffix], b[k + suffix]
            if reparam and k in ("pred_boxes", "pred_boxes_old"):
                mine = mine * hw
            worst = max(worst, float((theirs - mine).abs().max()))
        return worst

    official.train(mode == "train")
    ours.train(mode == "train")
    nq = official.num_queries_one2one if mode == "eval" else ours.config.num_queries
    official.num_queries = official.transformer.two_stage_num_proposals = nq  # as the official ``evaluate``
    with torch.no_grad():
        with default_dtype(torch.float64):
            a = official(NestedTensor(images, mask))
        b = ours(images, mask)
    row: list[object] = [mode, f"{size[0]}x{size[1]}", nq, tuple(b["pred_logits"].shape)]
    row += [f"{max_diff(a, b, only=(k,)):.2e}" for k in ("pred_logits", "pred_boxes")]
    row.append(f"{max_diff(a, b, only=('pred_deltas',)):.2e}" if reparam else "n/a")
    row.append(f"{max(max_diff(x, y) for x, y in zip(a['aux_outputs'], b['aux_outputs'])):.2e}")
    row.append(f"{max_diff(a['enc_outputs'], b['enc_outputs']):.2e}")
    if mode == "train":
        many = [max_diff(a, b, "_one2many")] + [max_diff(x, y) for x, y in zip(a["aux_outputs_one2many"], b["aux_outputs_one2many"])]
        row.append(f"{max(many):.2e}")
    else:
        row.append("n/a")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, help="a checkout of https://github.com/impiga/Plain-DETR")
    parser.add_argument("--configs", nargs="+", choices=tuple(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--backend", choices=("auto", "reference", "sdpa"), default="auto", help="zoo's attention backend")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/plain_detr_parity_cpu.md")
    args = parser.parse_args(argv)
    if args.official is None or not (args.official / "models" / "detr.py").is_file():
        print("skipped: pass --official /path/to/Plain-DETR (a checkout of impiga/Plain-DETR) to compare outputs")
        return 0
    import zoo
    from zoo.hub.checkpoints import load_state_dict_strict, strict_filter
    from zoo.vision.detection.models import convert_official

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = float64_copy(args.official, Path(tmp))
        for config in args.configs:
            script, name, overrides = CONFIGS[config]
            official = build_official(root, config)
            ours = zoo.create_model(name, drop_path_rate=0.0, attention_backend=args.backend, **overrides)
            ours = ours.double()  # float64 *before* loading: no float32 rounding of the official weights
            state = strict_filter(convert_official(official.state_dict(), ours), ours, source=f"official {script}")
            load_state_dict_strict(ours, state, source=f"official {script}")
            for seed, (mode, size, valid) in enumerate(CASES):
                rows.append([f"`{script}`", f"`{name}`" + (" + reparam" if overrides else ""), args.backend]
                            + compare(official, ours, mode, size, valid, seed))
                print(rows[-1], flush=True)
    headers = ["official config", "zoo model", "backend", "mode", "input", "queries", "logits shape",
               "max abs diff logits", "boxes", "deltas", "aux layers", "enc_outputs", "one-to-many"]
    from common import markdown_table, write_result

    title = "Plain-DETR float64 output parity with the official code (impiga/Plain-DETR)"
    notes = ("Both models in float64 on CPU, the official one from a copy whose float32 casts are float64; "
             "random init + perturbation, converted by zoo's convert_official; batch 2, the second image padded. "
             "Each cell is the max abs difference over every element of that output (logits; boxes normalized "
             "cxcywh, or pixels with reparam; `aux layers`, `enc_outputs` and `one-to-many`: over all their outputs).")
    if args.write:
        write_result("plain_detr_parity_cpu" if args.backend == "auto" else f"plain_detr_parity_{args.backend}_cpu",
                     title, headers, rows, notes)
    else:
        print(markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

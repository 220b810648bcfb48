"""Config fixtures of the retrieval configs (``tests/test_configs.py``): a tiny MSR-VTT in its real files."""

from __future__ import annotations

from pathlib import Path

from zoo.vision.retrieval.data import write_synthetic_msrvtt

#: the registry's tiny CLIP (``zoo.vision.retrieval.models.TINY_CLIP``) reads 32x32 frames and 16 tokens
_TINY = ["--data.init_args.image_size", "32", "--data.init_args.context_length", "16", "--data.init_args.num_frames", "4"]


def _retrieval(init_args: dict, root: Path) -> list[str]:
    if init_args.get("path") is None:  # the offline generator, shrunk
        return [*_TINY, "--data.init_args.synthetic", "[4, 2, 2]"]
    write_synthetic_msrvtt(root / "msrvtt", num_train=4, num_val=2, num_test=2, frames=8, size=32)
    return [*_TINY, "--data.init_args.path", str(root / "msrvtt")]


DATA_ARGS = {"zoo.vision.retrieval.data.VideoRetrievalDataModule": _retrieval}

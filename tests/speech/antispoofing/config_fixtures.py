"""Config-test fixtures of the anti-spoofing configs (see ``tests/test_configs.py``): a tiny corpus in the
real ASVspoof 2019 LA layout (flac + CM protocols), written by the offline generator, and short crops."""

from __future__ import annotations

from pathlib import Path

from zoo.speech.antispoofing.data import write_synthetic_asvspoof2019


def _asvspoof2019(init_args: dict, root: Path) -> list[str]:
    corpus = write_synthetic_asvspoof2019(root / "LA", bonafide=4, seconds=(0.5, 0.7))
    return [
        "--data.init_args.path", str(corpus), "--data.init_args.crop_seconds", "0.5",
        "--data.init_args.eval_seconds", "0.5",
    ]


DATA_ARGS = {"zoo.speech.antispoofing.data.ASVspoofDataModule": _asvspoof2019}

"""Config-test fixtures of sign recognition: a tiny synthetic WLASL dataset in the real on-disk layout."""

from __future__ import annotations

from pathlib import Path

from zoo.sign.recognition.data import generate_synthetic_signs


def _sign_data(init_args: dict, root: Path) -> list[str]:
    path = generate_synthetic_signs(root, num_glosses=20, num_signers=5, repeats=1, test_signers=1, val_signers=1)
    return ["--data.init_args.path", str(path), "--data.init_args.max_frames", "16"]


DATA_ARGS = {"zoo.sign.recognition.data.SignDataModule": _sign_data}

"""Anti-spoofing tests share one tiny corpus written by the offline generator in the real ASVspoof 2019
LA layout (flac + CM protocols). They run single-threaded (``tests/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.speech.antispoofing.data import write_synthetic_asvspoof2019


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """4 training bona fide utterances (+ 2 per attack A01-A04), dev and eval likewise, 0.5-0.7 s each."""
    return write_synthetic_asvspoof2019(tmp_path_factory.mktemp("asvspoof2019_la"), bonafide=4, seconds=(0.5, 0.7))

"""Musical statistics of four-voice chorales, for sampled pieces and for the real ones beside them.

    stats = chorale_stats(grid, step_seconds=60 / 90 / 4)     # a ChoraleGrid at 90 bpm, 16th steps

Per piece (:func:`chorale_stats`):

- ``out_of_range``: fraction of steps where a sounding voice lies outside its range
  (:data:`~zoo.music.lm.tokenizers.VOICE_RANGES`): a voice's line in another voice's track;
- ``crossing``: fraction of steps where a lower voice sounds above the voice over it (S/A, A/T, T/B);
- ``longest_chord_s``: the longest stretch with nothing struck in any voice, in seconds (a frozen chord);
- ``in_key``: fraction of sounding voice-steps whose pitch class lies in the piece's best-fitting key
  (Krumhansl-Kessler profiles correlated with the duration-weighted pitch-class histogram; major =
  the diatonic scale, minor = natural minor plus the raised 7th, the leading tone Bach's minor-key
  chorales use throughout);
- ``pc_entropy``: entropy (bits) of that pitch-class histogram (uniform over 12 = 3.58);
- ``repetition``: fraction of bars (16 steps) equal to an earlier bar of the same piece.

:func:`summarize` turns a list of them into the table row ``python -m zoo.music.evaluate
--sample_stats N`` prints: means, the worst piece for the frozen-chord and range columns, and counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .tokenizers import VOICE_RANGES, ChoraleGrid

__all__ = ["chorale_stats", "summarize", "key_of", "STAT_NAMES"]

STAT_NAMES = ("out_of_range", "crossing", "longest_chord_s", "in_key", "pc_entropy", "repetition")

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
_MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
_MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor + the raised 7th
_BAR = 16  # 16th-note steps per 4/4 bar


def _pc_histogram(pitches: np.ndarray) -> np.ndarray:
    sounding = pitches[pitches >= 0]
    return np.bincount(sounding % 12, minlength=12).astype(np.float64)  # (12,)


def key_of(pitches: np.ndarray) -> tuple[int, str]:
    """``(tonic pitch class, "major" | "minor")`` with the highest profile correlation."""
    hist = _pc_histogram(pitches)
    if hist.sum() == 0:
        return 0, "major"
    best, best_r = (0, "major"), -np.inf
    for mode, profile in (("major", _MAJOR_PROFILE), ("minor", _MINOR_PROFILE)):
        for tonic in range(12):
            r = np.corrcoef(hist, np.roll(profile, tonic))[0, 1]
            if np.isfinite(r) and r > best_r:
                best, best_r = (tonic, mode), r
    return best


def chorale_stats(grid: ChoraleGrid, step_seconds: float) -> dict[str, float]:
    """The statistics of one piece (see the module docstring); an empty piece is an error."""
    pitches, onsets = grid.pitches, grid.onsets  # (T, 4), (T, 4)
    steps = len(grid)
    if steps == 0:
        raise ValueError("chorale_stats: the piece has no time steps")
    sounding = pitches >= 0
    low = np.array([r[0] for r in VOICE_RANGES])
    high = np.array([r[1] for r in VOICE_RANGES])
    outside = sounding & ((pitches < low) | (pitches > high))  # (T, 4)
    upper, lower = pitches[:, :-1], pitches[:, 1:]  # (T, 3): S/A, A/T, T/B
    crossed = (upper >= 0) & (lower >= 0) & (lower > upper)

    # longest run of steps with no onset in any voice, counted with the step that struck the chord
    struck = onsets.any(axis=1)
    longest = run = 0
    for hit in struck:
        run = 1 if hit else run + 1
        longest = max(longest, run)

    hist = _pc_histogram(pitches)
    total = hist.sum()
    tonic, mode = key_of(pitches)
    scale = {(tonic + d) % 12 for d in (_MAJOR_SCALE if mode == "major" else _MINOR_SCALE)}
    in_key = sum(hist[pc] for pc in scale) / total if total else 0.0
    p = hist[hist > 0] / total if total else np.ones(1)
    entropy = float(-(p * np.log2(p)).sum())

    bars = [pitches[i : i + _BAR].tobytes() for i in range(0, steps - _BAR + 1, _BAR)]
    repeated = sum(1 for i, bar in enumerate(bars) if bar in bars[:i])
    return {
        "out_of_range": float(outside.any(axis=1).mean()),
        "crossing": float(crossed.any(axis=1).mean()),
        "longest_chord_s": float(longest * step_seconds),
        "in_key": float(in_key),
        "pc_entropy": entropy,
        "repetition": repeated / len(bars) if bars else 0.0,
    }


def summarize(per_piece: Sequence[dict[str, float]], frozen_s: float = 4.0) -> dict[str, float]:
    """Means over pieces, plus ``max_longest_chord_s``, ``pieces_frozen`` (a chord held over
    ``frozen_s`` seconds), ``pieces_out_of_range`` (any step outside a voice's range) and ``pieces``."""
    if not per_piece:
        raise ValueError("summarize: no pieces")
    out = {name: float(np.mean([s[name] for s in per_piece])) for name in STAT_NAMES}
    out["max_longest_chord_s"] = max(s["longest_chord_s"] for s in per_piece)
    out["pieces_frozen"] = sum(s["longest_chord_s"] > frozen_s for s in per_piece)
    out["pieces_out_of_range"] = sum(s["out_of_range"] > 0 for s in per_piece)
    out["pieces"] = len(per_piece)
    return out


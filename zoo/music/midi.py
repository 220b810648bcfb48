"""MIDI I/O shared by the music tasks: notes, reading MIDI files, and writing what a generator made
(the ``.mid``, a piano-roll PNG beside it, optionally a ``.wav`` preview)."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Note", "load_midi", "save_piano_roll", "save_wav", "write_outputs"]


@dataclass(frozen=True)
class Note:
    """One note of a performance: MIDI pitch and velocity, onset and offset in seconds."""

    pitch: int
    velocity: int
    start: float
    end: float


def load_midi(midi: Any) -> Any:
    """A ``pretty_midi.PrettyMIDI`` from a path (or the object itself); unreadable files name the path."""
    import pretty_midi

    if isinstance(midi, pretty_midi.PrettyMIDI):
        return midi
    path = Path(midi)
    if not path.is_file():
        raise ValueError(f"MIDI file {path} does not exist")
    try:
        return pretty_midi.PrettyMIDI(str(path))
    except Exception as err:  # mido/pretty_midi raise many types for corrupt files
        raise ValueError(f"{path} is not a readable MIDI file: {type(err).__name__}: {err}") from err


def save_piano_roll(pm: Any, path: str | Path, fs: int = 50) -> Path:
    """A piano-roll PNG: one colour per track, time in seconds on x, MIDI pitch on y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    end = max(pm.get_end_time(), 1.0)
    fig, ax = plt.subplots(figsize=(max(6.0, min(24.0, end / 2)), 4), dpi=100)
    colors = plt.get_cmap("tab10")
    pitches = [n.pitch for inst in pm.instruments for n in inst.notes]
    for i, inst in enumerate(pm.instruments):
        for n in inst.notes:
            ax.add_patch(plt.Rectangle((n.start, n.pitch - 0.4), n.end - n.start, 0.8, color=colors(i % 10), lw=0))
        ax.plot([], [], color=colors(i % 10), label=inst.name or f"track {i}", lw=6)
    lo, hi = (min(pitches) - 2, max(pitches) + 2) if pitches else (48, 84)
    ax.set_xlim(0, end)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("MIDI pitch")
    if len(pm.instruments) > 1:
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_wav(pm: Any, path: str | Path, sample_rate: int = 22050) -> Path:
    """A simple preview: pretty_midi's additive sine synthesis, 16-bit mono."""
    path = Path(path)
    audio = pm.synthesize(fs=sample_rate)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    pcm = (audio / peak * 0.9 * 32767 if peak > 0 else audio).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def write_outputs(tokens: list[int], tokenizer: Any, out: str | Path, wav: bool = False) -> dict[str, Path]:
    """Write ``out`` (.mid), the piano roll ``out.png`` and optionally ``out.wav``; returns the paths."""
    out = Path(out)
    if out.suffix.lower() not in (".mid", ".midi"):
        raise ValueError(f"--out must end in .mid or .midi, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    pm = tokenizer.tokens_to_midi(tokens)
    pm.write(str(out))
    paths = {"midi": out, "png": save_piano_roll(pm, out.with_suffix(".png"))}
    if wav:
        paths["wav"] = save_wav(pm, out.with_suffix(".wav"))
    return paths



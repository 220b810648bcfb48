"""Anti-spoofing data: ASVspoof 2019 LA, ASVspoof 2021 LA / DF, In-the-Wild, and an offline generator.

Readers of the real on-disk formats:

- ASVspoof 2019 LA: ``ASVspoof2019_LA_{train,dev,eval}/flac/<UTT>.flac`` and
  ``ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt`` with lines
  ``SPEAKER UTT - SYSTEM KEY`` (SYSTEM ``-`` for bona fide, ``A01``..``A19`` for attacks; KEY
  ``bonafide`` / ``spoof``): :func:`read_cm_protocol`, :func:`asvspoof2019_split`.
- ASVspoof 2021 LA / DF (evaluation only): ``trial_metadata.txt`` (``keys/{LA,DF}/CM/``) with lines
  ``SPEAKER UTT CODEC TRANSMISSION ATTACK KEY TRIM SUBSET ...``, audio in ``ASVspoof2021_{LA,DF}_eval/flac``:
  :func:`read_2021_metadata`.
- In-the-Wild: ``meta.csv`` (``file,speaker,label`` with label ``bona-fide`` / ``spoof``) beside the wav
  files: :func:`read_itw_meta`.

Audio is read with soundfile (mono, resampled to 16 kHz if needed). Every listed file is checked when the
split is indexed (its header read); unreadable or missing files are skipped with one counted warning
(:func:`zoo.training.data.read_each`). Training examples are random ``crop_seconds`` crops, evaluation
examples the first ``eval_seconds`` (or the whole utterance, ``eval_seconds=None``, one per batch);
utterances shorter than that are repeated to length (the RawNet2 / AASIST recipes' padding).

Offline default (:func:`write_synthetic_asvspoof2019`): a small corpus written in the ASVspoof 2019 LA
layout, flac + protocol files, and read back through the same reader. "Bona fide" utterances are
source-filter speech: a glottal pulse train with a natural pitch contour (declination, slow modulation,
per-period jitter and shimmer), aspiration and breath noise, through time-varying formant resonators
that glide between vowel targets, with fricative noise bursts and pauses. "Spoofed" utterances are
other such utterances passed through one of six vocoder-style resyntheses, each an attack id:

======  ===================  ===================================================================
id      name                 what it does
======  ===================  ===================================================================
A01     griffin_lim          STFT magnitude, phase rebuilt by Griffin-Lim (8 iterations)
A02     band_limited         below 4 kHz kept, above replaced by noise shaped by the smoothed envelope
A03     frame_repetition     20 ms overlap-add frames randomly repeated and dropped
A04     mel_inversion        40-band mel spectrogram inverted (pseudo-inverse, Griffin-Lim phase)
A05     lpc_vocoder          LPC envelope (order 16) re-excited by a jitter-free pulse train / noise
A06     random_phase         STFT magnitude with uniformly random phase, one inverse STFT
======  ===================  ===================================================================

Train and dev hold A01-A04; eval holds all six, so A05 and A06 are attacks never seen in training, as
ASVspoof 2019 LA's eval set holds attacks A07-A19 that train and dev do not.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.training.data import ZooDataModule, cache_dir, read_each

__all__ = [
    "SAMPLE_RATE",
    "ATTACKS",
    "Trial",
    "read_cm_protocol",
    "read_2021_metadata",
    "read_itw_meta",
    "asvspoof2019_split",
    "SpoofDataset",
    "synthesize_bonafide",
    "spoof",
    "write_synthetic_asvspoof2019",
    "ASVspoofDataModule",
]

SAMPLE_RATE = 16_000
ATTACKS = {
    "A01": "griffin_lim", "A02": "band_limited", "A03": "frame_repetition",
    "A04": "mel_inversion", "A05": "lpc_vocoder", "A06": "random_phase",
}
SEEN_ATTACKS = ("A01", "A02", "A03", "A04")
_PROTOCOLS = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
_SPLIT_DIRS = {"train": "train", "val": "dev", "test": "eval"}


@dataclass(frozen=True)
class Trial:
    """One protocol line: the audio ``path``, its utterance and speaker ids, ``attack`` (``-`` for
    bona fide) and ``label`` (1 bona fide, 0 spoof)."""

    path: Path
    utt: str
    speaker: str
    attack: str
    label: int


# ------------------------------------------------------------------------------------------- readers
def _key_label(key: str, where: str) -> int:
    key = key.lower()
    if key in ("bonafide", "bona-fide", "genuine"):
        return 1
    if key == "spoof":
        return 0
    raise ValueError(f"{where}: key must be 'bonafide' or 'spoof', got {key!r}")


def _lines(path: Path, what: str) -> list[tuple[int, str, list[str]]]:
    """``(line number, line, fields)`` of the non-empty lines of a whitespace-separated text file."""
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    return [(n, line, line.split()) for n, line in enumerate(path.read_text().splitlines(), 1) if line.split()]


def read_cm_protocol(protocol: str | Path, audio_dir: str | Path, ext: str = ".flac") -> list[Trial]:
    """An ASVspoof 2019 CM protocol (``SPEAKER UTT - SYSTEM KEY`` per line) -> trials under ``audio_dir``."""
    protocol, audio_dir = Path(protocol), Path(audio_dir)
    trials = []
    for n, line, parts in _lines(protocol, "CM protocol"):
        if len(parts) != 5:
            raise ValueError(f"{protocol}:{n}: expected 'SPEAKER UTT - SYSTEM KEY' (5 fields), got {line!r}")
        speaker, utt, _, system, key = parts
        label = _key_label(key, f"{protocol}:{n}")
        trials.append(Trial(audio_dir / f"{utt}{ext}", utt, speaker, "-" if label else system, label))
    return trials


def read_2021_metadata(
    metadata: str | Path, audio_dir: str | Path, subset: str | None = "eval", ext: str = ".flac"
) -> list[Trial]:
    """ASVspoof 2021 LA / DF ``trial_metadata.txt`` -> trials; ``subset`` keeps the lines of that
    evaluation subset (column 8: ``eval``, ``progress``, ``hidden_track``), ``None`` keeps all."""
    metadata, audio_dir = Path(metadata), Path(audio_dir)
    trials = []
    for n, line, parts in _lines(metadata, "trial metadata"):
        if len(parts) < 6:
            raise ValueError(f"{metadata}:{n}: expected 'SPEAKER UTT CODEC TRANSMISSION ATTACK KEY ...', got {line!r}")
        if subset is not None and len(parts) >= 8 and parts[7] != subset:
            continue
        label = _key_label(parts[5], f"{metadata}:{n}")
        trials.append(Trial(audio_dir / f"{parts[1]}{ext}", parts[1], parts[0], "-" if label else parts[4], label))
    return trials


def read_itw_meta(meta: str | Path) -> list[Trial]:
    """In-the-Wild ``meta.csv`` (``file,speaker,label``) -> trials; the audio lies beside it."""
    meta = Path(meta)
    if not meta.is_file():
        raise ValueError(f"In-the-Wild metadata {meta} does not exist")
    with open(meta, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"file", "speaker", "label"} <= set(rows[0]):
        raise ValueError(f"{meta}: expected the columns file,speaker,label; got {list(rows[0])}")
    trials = []
    for n, row in enumerate(rows, 2):
        label = _key_label(row["label"], f"{meta}:{n}")
        trials.append(Trial(meta.parent / row["file"], Path(row["file"]).stem, row["speaker"], "-" if label else "itw", label))
    return trials


def asvspoof2019_split(root: str | Path, split: str) -> list[Trial]:
    """Trials of ``split`` (``train``, ``dev``, ``eval``) of an ASVspoof 2019 LA root directory."""
    root = Path(root)
    if split not in _PROTOCOLS:
        raise ValueError(f"ASVspoof 2019 split must be one of {list(_PROTOCOLS)}, got {split!r}")
    protocol = root / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{_PROTOCOLS[split]}.txt"
    return read_cm_protocol(protocol, root / f"ASVspoof2019_LA_{split}" / "flac")


def _find_eval_trials(path: Path) -> list[Trial]:
    """The evaluation trials of an ASVspoof 2021 LA / DF, In-the-Wild or ASVspoof 2019 LA directory."""
    if (path / "meta.csv").is_file():
        return read_itw_meta(path / "meta.csv")
    metadata = sorted(path.glob("**/CM/trial_metadata.txt")) or sorted(path.glob("**/trial_metadata.txt"))
    if metadata:
        flac = sorted(path.glob("**/ASVspoof2021_*_eval/flac")) or sorted(path.glob("**/flac"))
        if not flac:
            raise ValueError(f"{path}: found {metadata[0]} but no ASVspoof2021_*_eval/flac directory")
        return read_2021_metadata(metadata[0], flac[0])
    if (path / "ASVspoof2019_LA_cm_protocols").is_dir():
        return asvspoof2019_split(path, "eval")
    raise ValueError(
        f"eval_path {path}: expected an In-the-Wild folder (meta.csv), an ASVspoof 2021 LA/DF folder "
        "(keys/.../CM/trial_metadata.txt + ASVspoof2021_*_eval/flac) or an ASVspoof 2019 LA root"
    )


def _check_audio(trial: Trial) -> int:
    import soundfile as sf

    info = sf.info(str(trial.path))
    if info.frames < 1:
        raise ValueError("no audio frames")
    return info.samplerate


def index_trials(trials: list[Trial], what: str) -> list[Trial]:
    """The trials whose audio can be opened; the others skipped with one counted warning."""
    return [t for t, _ in read_each(trials, _check_audio, what=what, name=lambda t: str(t.path))]


def read_audio(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples of ``path`` at ``sample_rate`` (resampled when the file has another rate)."""
    import soundfile as sf

    wave, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, channels)
    wave = wave.mean(axis=1)
    if sr != sample_rate:
        import torchaudio.functional as taf

        wave = taf.resample(torch.from_numpy(wave), sr, sample_rate).numpy()
    return wave


def fit_length(wave: np.ndarray, length: int, start: int = 0) -> np.ndarray:
    """``length`` samples from ``start``; a shorter utterance is repeated to length first."""
    if wave.shape[0] < length + start:
        wave = np.tile(wave, math.ceil((length + start) / max(1, wave.shape[0])))
    return wave[start : start + length]


class SpoofDataset(Dataset):
    """Trials as ``{"wave": (T,), "label", "unseen", "utt", "attack"}``.

    ``crop`` samples: random crops when ``random_crop`` (training), else the first ``crop`` samples;
    ``crop=None`` gives whole utterances. ``unseen`` marks spoofs whose attack is not in ``seen_attacks``.
    """

    def __init__(
        self, trials: list[Trial], crop: int | None, random_crop: bool, seen_attacks: set[str] | None = None
    ) -> None:
        self.trials = trials
        self.crop, self.random_crop = crop, random_crop
        self.seen_attacks = seen_attacks

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, index: int) -> dict[str, Any]:
        t = self.trials[index]
        try:
            wave = read_audio(t.path)
        except Exception as err:  # a file that changed since it was indexed
            raise ValueError(f"{t.path}: cannot read audio ({type(err).__name__}: {err})") from err
        if self.crop is not None:
            start = 0
            if self.random_crop and wave.shape[0] > self.crop:
                start = int(torch.randint(0, wave.shape[0] - self.crop + 1, ()).item())
            wave = fit_length(wave, self.crop, start)
        unseen = t.label == 0 and self.seen_attacks is not None and t.attack not in self.seen_attacks
        return {
            "wave": torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)),
            "label": torch.tensor(t.label, dtype=torch.long),
            "unseen": torch.tensor(unseen),
            "utt": t.utt,
            "attack": t.attack,
        }

    @property
    def class_counts(self) -> tuple[int, int]:
        """``(spoof, bona fide)`` counts."""
        bona = sum(t.label for t in self.trials)
        return len(self.trials) - bona, bona


# ---------------------------------------------------------------------------------------- generator
_VOWELS = np.array(  # F1, F2, F3, F4 (Hz) of /a e i o u ae er/
    [[730, 1090, 2440, 3400], [530, 1840, 2480, 3500], [270, 2290, 3010, 3700], [570, 840, 2410, 3300],
     [300, 870, 2240, 3300], [660, 1720, 2410, 3500], [490, 1350, 1690, 3300]], dtype=np.float64
)
_BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0])


def _resonate(x: np.ndarray, freqs: np.ndarray, bw: float, frame: int, rng_gain: float = 1.0) -> np.ndarray:
    """A 2-pole resonator with unity DC gain whose centre follows ``freqs`` (one value per ``frame`` samples)."""
    from scipy.signal import lfilter

    y = np.empty_like(x)
    zi = np.zeros(2)
    r = math.exp(-math.pi * bw / SAMPLE_RATE)
    for i, f in enumerate(freqs):
        seg = slice(i * frame, min((i + 1) * frame, x.shape[0]))
        if seg.start >= x.shape[0]:
            break
        a = [1.0, -2 * r * math.cos(2 * math.pi * f / SAMPLE_RATE), r * r]
        y[seg], zi = lfilter([sum(a) * rng_gain], a, x[seg], zi=zi)
    return y


def synthesize_bonafide(rng: np.random.Generator, speaker: dict[str, float], seconds: float) -> np.ndarray:
    """One "bona fide" utterance: source-filter speech with a natural pitch contour (see the module docstring)."""
    from scipy.signal import lfilter

    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    # segments: voiced syllables, fricatives, pauses
    voicing = np.zeros(n)
    frication = np.zeros(n)
    targets: list[tuple[int, np.ndarray]] = []
    pos = int(rng.uniform(0.05, 0.15) * SAMPLE_RATE)
    while pos < n - 0.1 * SAMPLE_RATE:
        length = int(rng.uniform(0.12, 0.3) * SAMPLE_RATE)
        ramp = np.minimum(1, np.minimum(np.arange(length), np.arange(length)[::-1]) / (0.02 * SAMPLE_RATE))
        end = min(n, pos + length)
        voicing[pos:end] = np.sin(0.5 * np.pi * ramp[: end - pos]) * rng.uniform(0.6, 1.0)
        targets.append((pos + length // 2, _VOWELS[rng.integers(len(_VOWELS))] * speaker["formant_scale"]))
        pos = end
        gap = rng.choice(["fricative", "pause", "none"], p=[0.4, 0.25, 0.35])
        if gap == "fricative":
            length = int(rng.uniform(0.04, 0.1) * SAMPLE_RATE)
            end = min(n, pos + length)
            frication[pos:end] = np.hanning(length)[: end - pos] * rng.uniform(0.2, 0.5)
            pos = end
        elif gap == "pause":
            pos += int(rng.uniform(0.05, 0.15) * SAMPLE_RATE)
    # pitch: declination, slow modulation, per-period jitter and shimmer
    f0 = speaker["f0"] * (1 - 0.12 * t / seconds) * (
        1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 1.2) * t + rng.uniform(0, 2 * np.pi))
        + 0.04 * np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 2 * np.pi))
    )
    pulses = np.zeros(n)
    k = 0.0
    while k < n:
        period = SAMPLE_RATE / f0[int(k)] * (1 + speaker["jitter"] * rng.standard_normal())
        pulses[int(k)] = 1 + speaker["shimmer"] * rng.standard_normal()
        k += max(period, 20.0)
    glottal = lfilter([1.0], [1.0, -0.96], lfilter([1.0], [1.0, -0.96], pulses))  # spectral tilt
    glottal = lfilter([1.0, -1.0], [1.0], glottal)  # lip radiation
    noise = rng.standard_normal(n)
    aspiration = lfilter([1.0, -0.9], [1.0], noise) * speaker["breathiness"]
    source = (glottal / (np.abs(glottal).max() + 1e-9) + aspiration * 0.3) * voicing
    # formant trajectories gliding between the vowel targets, 5 ms frames
    frame = SAMPLE_RATE // 200
    centres = np.array([c for c, _ in targets] or [n // 2])
    values = np.stack([v for _, v in targets] or [_VOWELS[0]])
    frame_times = np.arange(0, n, frame) + frame // 2
    voiced = source
    for j in range(4):
        track = np.interp(frame_times, centres, values[:, j])
        voiced = _resonate(voiced, track, _BANDWIDTHS[j] * speaker["formant_scale"], frame)
    fric_track = np.full(len(frame_times), rng.uniform(3500, 6000))
    fricative = _resonate(noise * frication, fric_track, 1500.0, frame) * 0.5
    breath = lfilter([1.0], [1.0, -0.7], rng.standard_normal(n)) * 0.003 * (voicing < 0.05)
    out = voiced / (np.abs(voiced).max() + 1e-9) + fricative + breath
    out += 3e-4 * rng.standard_normal(n)  # recording noise floor
    return (out / (np.abs(out).max() + 1e-9) * rng.uniform(0.3, 0.8)).astype(np.float32)


def _stft(x: np.ndarray) -> np.ndarray:
    import librosa

    return librosa.stft(x, n_fft=512, hop_length=128)


def _istft(spec: np.ndarray, length: int) -> np.ndarray:
    import librosa

    return librosa.istft(spec, hop_length=128, length=length)


def spoof(wave: np.ndarray, attack: str, rng: np.random.Generator) -> np.ndarray:
    """``wave`` resynthesized by the vocoder-style ``attack`` (``A01``..``A06``, see :data:`ATTACKS`)."""
    import librosa
    from scipy.signal import lfilter

    n = wave.shape[0]
    if attack == "A01":  # Griffin-Lim phase
        out = librosa.griffinlim(np.abs(_stft(wave)), n_iter=8, hop_length=128, length=n, random_state=int(rng.integers(2**31)))
    elif attack == "A02":  # band-limited resynthesis: the band above 4 kHz becomes envelope-shaped noise
        spec = _stft(wave)
        cut = int(4000 / (SAMPLE_RATE / 512))
        mag = np.abs(spec)
        smooth = np.apply_along_axis(lambda m: np.convolve(m, np.ones(9) / 9, mode="same"), 0, mag)
        phase = np.exp(2j * np.pi * rng.random(spec.shape))
        spec[cut:] = smooth[cut:] * phase[cut:]
        out = _istft(spec, n)
    elif attack == "A03":  # frame repetition / dropping, 20 ms overlap-add frames
        frame, hop = 320, 160
        win = np.hanning(frame)
        starts = list(range(0, n - frame, hop))
        chosen: list[int] = []
        i = 0
        while len(chosen) < len(starts):
            chosen.append(starts[min(i, len(starts) - 1)])
            u = rng.random()
            i += 0 if u < 0.25 else 2 if u < 0.4 else 1
        out = np.zeros(n)
        norm = np.full(n, 1e-3)
        for j, s in enumerate(chosen):
            out[j * hop : j * hop + frame] += wave[s : s + frame] * win
            norm[j * hop : j * hop + frame] += win
        out /= norm
    elif attack == "A04":  # 40-band mel spectrogram inversion
        basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=512, n_mels=40)  # (40, 257)
        mel = basis @ np.abs(_stft(wave))  # (40, frames)
        mag = np.maximum(np.linalg.pinv(basis) @ mel, 0.0)  # (257, frames), least-squares inversion
        out = librosa.griffinlim(mag, n_iter=8, hop_length=128, length=n, random_state=int(rng.integers(2**31)))
    elif attack == "A05":  # LPC vocoder with a jitter-free pulse train
        frame, hop = 400, 160
        f0 = librosa.yin(wave, fmin=60, fmax=400, sr=SAMPLE_RATE, frame_length=1024, hop_length=hop)
        f0 = np.convolve(f0, np.ones(5) / 5, mode="same")
        energy = np.array([np.sqrt(np.mean(wave[s : s + frame] ** 2) + 1e-12) for s in range(0, n, hop)])
        voiced = energy > 0.1 * energy.max()
        out = np.zeros(n)
        zi = np.zeros(16)
        phase = 0.0
        for j, s in enumerate(range(0, n, hop)):
            seg = wave[s : s + frame]
            if seg.shape[0] < 32:
                break
            a = librosa.lpc((seg * np.hanning(seg.shape[0])).astype(np.float64) + 1e-6 * rng.standard_normal(seg.shape[0]), order=16)
            m = min(hop, n - s)
            if voiced[min(j, len(voiced) - 1)]:
                excitation = np.zeros(m)
                step = f0[min(j, len(f0) - 1)] / SAMPLE_RATE
                for q in range(m):
                    phase += step
                    if phase >= 1:
                        phase -= 1
                        excitation[q] = 1.0
            else:
                excitation = 0.1 * rng.standard_normal(m)
            y, zi = lfilter([1.0], a, excitation * energy[j], zi=zi)
            out[s : s + m] = y
    elif attack == "A06":  # random phase, one inverse STFT
        spec = _stft(wave)
        out = _istft(np.abs(spec) * np.exp(2j * np.pi * rng.random(spec.shape)), n)
    else:
        raise ValueError(f"unknown attack {attack!r}; expected one of {list(ATTACKS)}")
    out = np.nan_to_num(np.asarray(out, dtype=np.float64))
    return (out / (np.abs(out).max() + 1e-9) * np.abs(wave).max()).astype(np.float32)


def _speaker(rng: np.random.Generator) -> dict[str, float]:
    female = rng.random() < 0.5
    return {
        "f0": rng.uniform(165, 240) if female else rng.uniform(85, 140),
        "formant_scale": rng.uniform(1.05, 1.18) if female else rng.uniform(0.88, 1.0),
        "jitter": rng.uniform(0.005, 0.015),
        "shimmer": rng.uniform(0.03, 0.1),
        "breathiness": rng.uniform(0.05, 0.4),
    }


#: bona fide utterances per split and spoofs per attack, for ``bonafide`` training bona fide utterances
def _split_sizes(bonafide: int) -> dict[str, tuple[int, int, tuple[str, ...]]]:
    return {
        "train": (bonafide, bonafide // 2, SEEN_ATTACKS),
        "dev": (max(2, bonafide * 2 // 5), max(1, bonafide // 5), SEEN_ATTACKS),
        "eval": (max(2, bonafide * 3 // 5), max(1, bonafide * 3 // 10), tuple(ATTACKS)),
    }


def write_synthetic_asvspoof2019(
    root: str | Path, bonafide: int = 100, seconds: tuple[float, float] = (2.0, 3.0), seed: int = 0
) -> Path:
    """Write the synthetic corpus (see the module docstring) in the ASVspoof 2019 LA layout under ``root``.

    ``bonafide`` training bona fide utterances; dev and eval get 2/5 and 3/5 as many, each split half
    as many spoofs per attack as bona fide ones. Speakers are disjoint across splits, as in ASVspoof.
    """
    import soundfile as sf

    root = Path(root)
    if bonafide < 2:
        raise ValueError(f"synthetic corpus: bonafide must be >= 2, got {bonafide}")
    rng = np.random.default_rng(seed)
    (root / "ASVspoof2019_LA_cm_protocols").mkdir(parents=True, exist_ok=True)
    utt_counter = 1_000_000
    speaker_counter = 0
    for split, (n_bona, n_per_attack, attacks) in _split_sizes(bonafide).items():
        audio = root / f"ASVspoof2019_LA_{split}" / "flac"
        audio.mkdir(parents=True, exist_ok=True)
        speakers = []
        for _ in range(max(2, n_bona // 5)):
            speakers.append((f"LA_{speaker_counter:04d}", _speaker(rng)))
            speaker_counter += 1
        spoofs = [(a, "spoof") for a in attacks for _ in range(n_per_attack)]
        spoofs = [spoofs[i] for i in rng.permutation(len(spoofs))]
        # bona fide lines spread evenly among the spoofed ones: every stretch of the protocol holds both
        plan = [p for _, p in sorted(
            [((i + 0.5) / n_bona, ("-", "bonafide")) for i in range(n_bona)]
            + [((i + 0.5) / len(spoofs), s) for i, s in enumerate(spoofs)], key=lambda x: x[0]
        )]
        lines = []
        for system, key in plan:
            speaker_id, speaker = speakers[int(rng.integers(len(speakers)))]
            wave = synthesize_bonafide(rng, speaker, float(rng.uniform(*seconds)))
            if key == "spoof":
                wave = spoof(wave, system, rng)
            utt = f"LA_{split[0].upper()}_{utt_counter}"
            utt_counter += 1
            sf.write(str(audio / f"{utt}.flac"), wave, SAMPLE_RATE, subtype="PCM_16")
            lines.append(f"{speaker_id} {utt} - {system} {key}")
        protocol = root / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{_PROTOCOLS[split]}.txt"
        protocol.write_text("\n".join(lines) + "\n")
    return root


def synthetic_corpus(bonafide: int = 100, seed: int = 0) -> Path:
    """The synthetic corpus in the zoo cache (written once; a ``complete.json`` marker is written last)."""
    root = cache_dir("speech", "antispoofing", f"synthetic_asvspoof2019_la_v3_b{bonafide}_s{seed}")
    marker = root / "complete.json"
    if not marker.is_file():
        write_synthetic_asvspoof2019(root, bonafide=bonafide, seed=seed)
        marker.write_text(json.dumps({"bonafide": bonafide, "seed": seed, "attacks": ATTACKS}))
    return root


# --------------------------------------------------------------------------------------- datamodule
class ASVspoofDataModule(ZooDataModule):
    """ASVspoof 2019 LA train / dev / eval (``path``: the LA root), or the synthetic corpus (no path).

    Args:
        path: an ASVspoof 2019 LA directory (``ASVspoof2019_LA_cm_protocols`` + ``ASVspoof2019_LA_*/flac``);
            ``None`` = the offline synthetic corpus in the same layout.
        eval_path: test on another corpus instead of the 2019 eval split: an ASVspoof 2021 LA or DF
            folder (``trial_metadata.txt`` + ``ASVspoof2021_*_eval/flac``) or In-the-Wild (``meta.csv``).
        crop_seconds: training crop length (random crops).
        eval_seconds: evaluation length (the first seconds); ``None`` = whole utterances, one per batch.
        synthetic_bonafide, synthetic_seed: size and seed of the synthetic corpus.
        batch_size, num_workers, limit: :class:`~zoo.training.data.ZooDataModule`'s.
    """

    drop_last_train = True  # BatchNorm in the spectral encoders

    def __init__(
        self,
        path: str | None = None,
        eval_path: str | None = None,
        crop_seconds: float = 4.0,
        eval_seconds: float | None = 4.0,
        synthetic_bonafide: int = 100,
        synthetic_seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        limit: int | None = None,
    ) -> None:
        super().__init__(path=path, batch_size=batch_size, num_workers=num_workers, limit=limit)
        if crop_seconds <= 0 or (eval_seconds is not None and eval_seconds <= 0):
            raise ValueError(f"crop_seconds and eval_seconds must be > 0, got {crop_seconds}, {eval_seconds}")
        self.eval_path = eval_path
        self.crop = int(crop_seconds * SAMPLE_RATE)
        self.eval_crop = None if eval_seconds is None else int(eval_seconds * SAMPLE_RATE)
        self.synthetic_bonafide, self.synthetic_seed = synthetic_bonafide, synthetic_seed
        self.seen_attacks: set[str] = set()

    def load_default(self) -> dict[str, Dataset]:
        return self.load_path(synthetic_corpus(self.synthetic_bonafide, self.synthetic_seed))

    def load_path(self, path: Path) -> dict[str, Dataset]:
        trials = {
            split: index_trials(asvspoof2019_split(path, _SPLIT_DIRS[split]), f"{_SPLIT_DIRS[split]} audio files under {path}")
            for split in ("train", "val")
        }
        if self.eval_path is not None:
            eval_path = Path(self.eval_path)
            if not eval_path.exists():
                raise ValueError(f"{type(self).__name__}: eval_path {str(eval_path)!r} does not exist")
            trials["test"] = index_trials(_find_eval_trials(eval_path), f"evaluation audio files under {eval_path}")
        else:
            trials["test"] = index_trials(asvspoof2019_split(path, "eval"), f"eval audio files under {path}")
        self.seen_attacks = {t.attack for t in trials["train"] if t.label == 0}
        return {
            "train": SpoofDataset(trials["train"], self.crop, random_crop=True, seen_attacks=self.seen_attacks),
            "val": SpoofDataset(trials["val"], self.eval_crop, random_crop=False, seen_attacks=self.seen_attacks),
            "test": SpoofDataset(trials["test"], self.eval_crop, random_crop=False, seen_attacks=self.seen_attacks),
        }

    @property
    def class_counts(self) -> tuple[int, int]:
        """``(spoof, bona fide)`` training utterances."""
        self.setup()
        return self.datasets["train"].class_counts

    def _whole_utterances(self, loader: DataLoader) -> DataLoader:
        if self.eval_crop is not None:
            return loader
        return DataLoader(loader.dataset, batch_size=1, num_workers=self.num_workers, collate_fn=loader.collate_fn)

    def val_dataloader(self) -> DataLoader:
        return self._whole_utterances(super().val_dataloader())

    def test_dataloader(self) -> DataLoader:
        return self._whole_utterances(super().test_dataloader())

    def predict_dataloader(self) -> DataLoader:
        return self._whole_utterances(super().predict_dataloader())


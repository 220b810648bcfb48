"""Text-video retrieval data: MSR-VTT, MSVD and LSMDC in their own files, and a synthetic MSR-VTT.

==============  =====================================================================================
``dataset``     on disk under ``path``
==============  =====================================================================================
``msrvtt``      ``MSRVTT_data.json`` (``videos`` with ``video_id`` and ``split``, ``sentences`` with
                ``video_id`` and ``caption``), ``MSRVTT_train.9k.csv`` or ``MSRVTT_train.7k.csv``
                (column ``video_id``), ``MSRVTT_JSFUSION_test.csv`` (``key,vid_key,video_id,sentence``),
                ``videos/<video_id>.mp4``
``msvd``        ``captions_msvd.json`` (``{video_id: [caption, ...]}``), ``train_list.txt``,
                ``val_list.txt``, ``test_list.txt`` (one video id a line), ``YouTubeClips/<id>.avi``
``lsmdc``       ``LSMDC16_annos_training.csv``, ``LSMDC16_annos_val.csv``,
                ``LSMDC16_challenge_1000_publictect.csv`` (tab-separated: clip id first, sentence
                last), ``videos/<movie>/<clip id>.avi`` (or flat ``videos/<clip id>.*``)
==============  =====================================================================================

``path=None`` writes a synthetic dataset in the MSR-VTT layout (real H.264 mp4 files, a json and the
csv files) into ``zoo.training.data.cache_dir("retrieval", ...)`` and reads it through the MSR-VTT
reader. Each synthetic video has two scenes, each a coloured shape moving in one direction with a
fading trail; its captions name one scene ("a red circle moves to the left") or both ("... , then
...").

Splits. MSR-VTT: test = the JSFusion 1k-A csv (one caption per video); validation = the json's
``validate`` videos (497), *removed* from the training csv, so that checkpoints are chosen on
validation and never on test (the official code validates on the test set); train = every caption of
the remaining csv videos. MSVD and LSMDC: their own train / val / test files. Validation and test
score every caption of every video.

Frames: ``num_frames`` (12) from equal segments of the video, the centre of each at evaluation and a
random frame within each at training (the official ``uniform`` / ``rand``). A video with fewer frames
is padded by repeating its last frame; both are counted in a warning when the videos are indexed.
Videos that do not open, have no decodable frame or are missing are skipped with one counted warning
(:func:`zoo.training.data.read_each`). Decoding is PyAV's (FFmpeg bundled in its wheel).

Transforms: RandomResizedCrop(``image_size``, scale 0.5-1) + horizontal flip for training, resize +
centre crop for evaluation, CLIP's mean / std, one set of crop parameters for all frames of a video.
Captions are tokenized by open_clip's ``SimpleTokenizer`` (OpenAI's BPE, shipped in its wheel).
"""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from zoo.training.data import SPLITS, ZooDataModule, cache_dir, read_each

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "DATASETS", "VideoEntry", "VideoRetrievalDataModule", "RetrievalPairs", "RetrievalVideos",
    "frame_indices", "probe_video", "read_frames", "read_lsmdc", "read_msrvtt", "read_msvd", "write_synthetic_msrvtt",
    "write_mp4",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DATASETS = ("msrvtt", "msvd", "lsmdc")
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")


@dataclass(frozen=True)
class VideoEntry:
    """One video of a split: its file, its captions and its frame count (from the probe)."""

    video_id: str
    path: Path
    captions: tuple[str, ...]
    num_frames: int


# ----------------------------------------------------------------------------------------- decoding
def probe_video(path: Path) -> int:
    """Frames in ``path``: the container's count, else the demuxed packets; decodes the first frame."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        count = int(stream.frames or 0)
        first = next(container.decode(stream), None)
        if first is None:
            raise ValueError("no decodable frame")
        if count <= 0:
            container.seek(0)
            count = sum(1 for packet in container.demux(stream) if packet.size)
    if count < 1:
        raise ValueError("no frames")
    return count


def frame_indices(length: int, num_frames: int, random: bool) -> list[int]:
    """``num_frames`` indices into ``length`` frames: one per equal segment, its centre or a random frame.

    A video shorter than ``num_frames`` gives each of its frames once, then its last frame repeated
    (the official X-Pool padding), whether or not the sampling is random.
    """
    if length < num_frames:
        return list(range(length)) + [length - 1] * (num_frames - length)
    edges = np.linspace(0, length, num_frames + 1).astype(int)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        hi = max(hi, lo + 1)
        out.append(int(torch.randint(lo, hi, ()).item()) if random else (lo + hi - 1) // 2)
    return [min(i, length - 1) for i in out]


def read_frames(path: Path, indices: Sequence[int]) -> Tensor:
    """The frames at ``indices`` (sorted or not), ``(len(indices), 3, H, W)`` uint8; indices past the
    decodable end take the last decoded frame (the official padding)."""
    import av

    wanted = sorted(set(indices))
    got: dict[int, Tensor] = {}
    last: Tensor | None = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted or i == 0:
                last = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)  # (3, H, W)
                got[i] = last
            if i >= wanted[-1]:
                break
    if last is None:
        raise ValueError(f"{path}: no decodable frame")
    return torch.stack([got.get(i, last) for i in indices])  # (F, 3, H, W)


def _index(entries: list[tuple[str, Path | None, list[str]]], num_frames: int, what: str) -> list[VideoEntry]:
    """Probe every video once (through ``read_each``); warn about the ones that will be padded."""

    def probe(item: tuple[str, Path | None, list[str]]) -> int:
        if item[1] is None:
            raise FileNotFoundError(f"no video file for {item[0]!r}")
        return probe_video(item[1])

    read = read_each(entries, probe, what=what, name=lambda e: str(e[1] or e[0]))
    videos = [VideoEntry(vid, path, tuple(caps), n) for (vid, path, caps), n in read]
    short = [v for v in videos if v.num_frames < num_frames]
    if short:
        warnings.warn(
            f"{len(short)} of {len(videos)} {what} have fewer than {num_frames} frames and are padded by repeating "
            f"their last frame; first: {', '.join(f'{v.path} ({v.num_frames})' for v in short[:3])}",
            stacklevel=2,
        )
    return videos


def _find_videos(root: Path) -> dict[str, Path]:
    """``stem -> file`` for every video file under ``root`` (any depth)."""
    if not root.is_dir():
        raise ValueError(f"video directory {root} does not exist")
    return {p.stem: p for p in sorted(root.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES}


# ----------------------------------------------------------------------------------------- readers
def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _read_csv(path: Path, columns: Sequence[str], delimiter: str = ",") -> list[dict[str, str]]:
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: expected columns {list(columns)}, found {reader.fieldnames}; missing {missing}")
        return list(reader)


def read_msrvtt(
    root: Path, split: str = "9k", videos_dir: str = "videos"
) -> dict[str, list[tuple[str, Path | None, list[str]]]]:
    """MSR-VTT ``{"train", "val", "test"}``: ``[(video_id, file or None, captions)]`` (see the module docstring)."""
    if split not in ("9k", "7k"):
        raise ValueError(f"MSR-VTT split must be '9k' or '7k', got {split!r}")
    data = _read_json(root / "MSRVTT_data.json")
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) or not isinstance(data.get("sentences"), list):
        raise ValueError(f"{root / 'MSRVTT_data.json'}: expected an object with lists 'videos' and 'sentences'")
    captions: dict[str, list[str]] = {}
    for i, s in enumerate(data["sentences"]):
        if not isinstance(s, dict) or not isinstance(s.get("video_id"), str) or not isinstance(s.get("caption"), str):
            raise ValueError(f"{root / 'MSRVTT_data.json'}: sentences[{i}] needs string 'video_id' and 'caption', got {s!r}")
        captions.setdefault(s["video_id"], []).append(s["caption"])
    validate = {v.get("video_id") for v in data["videos"] if isinstance(v, dict) and v.get("split") == "validate"}
    train_ids = [r["video_id"] for r in _read_csv(root / f"MSRVTT_train.{split}.csv", ["video_id"])]
    test_rows = _read_csv(root / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"])
    files = _find_videos(root / videos_dir)

    def entries(ids: Sequence[str]) -> list[tuple[str, Path | None, list[str]]]:
        return [(vid, files.get(vid), captions[vid]) for vid in ids if captions.get(vid)]

    return {
        "train": entries([v for v in train_ids if v not in validate]),
        "val": entries([v for v in train_ids if v in validate]),
        "test": [(r["video_id"], files.get(r["video_id"]), [r["sentence"]]) for r in test_rows],
    }


def read_msvd(root: Path, videos_dir: str = "YouTubeClips") -> dict[str, list[tuple[str, Path | None, list[str]]]]:
    """MSVD ``{"train", "val", "test"}`` from ``captions_msvd.json`` and the three id lists."""
    captions = _read_json(root / "captions_msvd.json")
    if not isinstance(captions, dict) or not all(isinstance(c, list) for c in captions.values()):
        raise ValueError(f"{root / 'captions_msvd.json'}: expected {{video_id: [caption, ...]}}")
    files = _find_videos(root / videos_dir)
    out = {}
    for split, name in (("train", "train_list.txt"), ("val", "val_list.txt"), ("test", "test_list.txt")):
        path = root / name
        if not path.is_file():
            raise ValueError(f"{path} does not exist")
        ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        unknown = [v for v in ids if v not in captions]
        if unknown:
            raise ValueError(f"{path}: {len(unknown)} video ids have no captions in captions_msvd.json, e.g. {unknown[:3]}")
        out[split] = [(v, files.get(v), [str(c) for c in captions[v]]) for v in ids]
    return out


LSMDC_FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}


def read_lsmdc(root: Path, videos_dir: str = "videos") -> dict[str, list[tuple[str, Path | None, list[str]]]]:
    """LSMDC ``{"train", "val", "test"}`` from the tab-separated annotation files."""
    files = _find_videos(root / videos_dir)
    out = {}
    for split, name in LSMDC_FILES.items():
        path = root / name
        if not path.is_file():
            raise ValueError(f"{path} does not exist")
        clips: dict[str, list[str]] = {}
        with open(path, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if not row:  # a blank line
                    continue
                if len(row) < 2 or not row[0].strip():
                    raise ValueError(f"{path}:{n}: expected 'clip_id<TAB>...<TAB>sentence', got {row!r}")
                clips.setdefault(row[0].strip(), []).append(row[-1].strip())
        out[split] = [(clip, files.get(clip), caps) for clip, caps in clips.items()]
    return out


# ----------------------------------------------------------------------------------------- datasets
class _Frames:
    """Frame sampling + transforms shared by the two dataset views."""

    def __init__(self, num_frames: int, image_size: int, train: bool, scale: tuple[float, float], hflip: float) -> None:
        from torchvision.transforms import v2

        self.num_frames, self.train = num_frames, train
        geometry = (
            [v2.RandomResizedCrop(image_size, scale=tuple(scale), antialias=True), v2.RandomHorizontalFlip(hflip)]
            if train
            else [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
        )
        self.transform = v2.Compose([*geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(CLIP_MEAN, CLIP_STD)])

    def __call__(self, video: VideoEntry) -> Tensor:
        idx = frame_indices(video.num_frames, self.num_frames, random=self.train)
        return self.transform(read_frames(video.path, idx))  # (F, 3, S, S), one crop for every frame


class RetrievalPairs(Dataset):
    """Training view: one item per (caption, video) pair."""

    def __init__(self, videos: list[VideoEntry], frames: _Frames, tokenize: Any) -> None:
        self.videos, self.frames, self.tokenize = videos, frames, tokenize
        self.pairs = [(v, c) for v, video in enumerate(videos) for c in range(len(video.captions))]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        v, c = self.pairs[i]
        video = self.videos[v]
        caption = video.captions[c]
        return {"frames": self.frames(video), "tokens": self.tokenize([caption]), "video": v, "captions": [caption]}


class RetrievalVideos(Dataset):
    """Evaluation view: one item per video with all its captions."""

    def __init__(self, videos: list[VideoEntry], frames: _Frames, tokenize: Any) -> None:
        self.videos, self.frames, self.tokenize = videos, frames, tokenize

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, v: int) -> dict[str, Any]:
        video = self.videos[v]
        return {"frames": self.frames(video), "tokens": self.tokenize(list(video.captions)), "video": v, "captions": list(video.captions)}


def collate_retrieval(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``frames (B, F, 3, S, S)``, ``tokens (T, L)``, ``text_video (T,)`` = each caption's position in the
    batch, ``video_index (B,)`` = the videos' dataset indices, ``captions`` (T strings)."""
    return {
        "frames": torch.stack([it["frames"] for it in items]),
        "tokens": torch.cat([it["tokens"] for it in items]),
        "text_video": torch.cat([torch.full((len(it["captions"]),), b, dtype=torch.long) for b, it in enumerate(items)]),
        "video_index": torch.tensor([it["video"] for it in items], dtype=torch.long),
        "captions": [c for it in items for c in it["captions"]],
    }


# ----------------------------------------------------------------------------------------- synthetic MSR-VTT
COLORS = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230),
    "yellow": (235, 220, 40), "white": (240, 240, 240), "purple": (160, 60, 200),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_PHRASES = {"left": "to the left", "right": "to the right", "up": "upwards", "down": "downwards"}
_VERBS = ("moves", "slides", "is moving", "travels")


def _shape_mask(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        return (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    return (dy <= radius * 0.8) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) * 0.6)  # apex up


def _render_scene(rng: np.random.Generator, spec: tuple[str, str, str], frames: int, size: int) -> np.ndarray:
    color, shape, direction = spec
    dx, dy = DIRECTIONS[direction]
    radius = size * rng.uniform(0.1, 0.15)
    span = size * rng.uniform(0.45, 0.6)
    margin = radius + 2
    cx0 = rng.uniform(margin, size - margin) if dx == 0 else (size / 2 - dx * span / 2)
    cy0 = rng.uniform(margin, size - margin) if dy == 0 else (size / 2 - dy * span / 2)
    background = rng.integers(20, 70, size=3)
    rgb = np.array(COLORS[color], dtype=np.float32)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        img = np.broadcast_to(background, (size, size, 3)).astype(np.float32).copy()
        for lag, alpha in ((3, 0.2), (2, 0.35), (1, 0.55), (0, 1.0)):  # a fading trail shows the direction
            p = max(0.0, t - lag * 1.5) / max(1, frames - 1)
            mask = _shape_mask(shape, size, cx0 + dx * span * p, cy0 + dy * span * p, radius * (1 - 0.12 * lag))
            img[mask] = (1 - alpha) * img[mask] + alpha * rgb
        img += rng.normal(0, 4, size=img.shape)
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _describe(spec: tuple[str, str, str], verb: str) -> str:
    color, shape, direction = spec
    return f"a {color} {shape} {verb} {_PHRASES[direction]}"


def write_mp4(path: Path, frames: np.ndarray, fps: int = 8) -> None:
    """Write ``frames (F, H, W, 3) uint8`` as an H.264 mp4 (PyAV's bundled libx264, yuv420p)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_synthetic_msrvtt(
    root: Path, num_train: int = 320, num_val: int = 48, num_test: int = 72, frames: int = 24, size: int = 64, seed: int = 0
) -> Path:
    """Write a synthetic MSR-VTT (json, train.9k/7k csv, JSFusion test csv, ``videos/*.mp4``) under ``root``.

    Each video: two scenes (the cut at 35-65% of its length), each a coloured shape moving in one of four
    directions. Captions: scene one, scene two, and both ("..., then ..."); the test csv keeps one of
    the three per video, cycling, as JSFusion keeps one caption per video.
    """
    rng = np.random.default_rng(seed)
    specs = [(c, s, d) for c in COLORS for s in SHAPES for d in DIRECTIONS]
    (root / "videos").mkdir(parents=True, exist_ok=True)
    videos, sentences, test_rows, train_ids = [], [], [], []
    total = num_train + num_val + num_test
    for i in range(total):
        split = "train" if i < num_train else "validate" if i < num_train + num_val else "test"
        a, b = rng.choice(len(specs), size=2, replace=False)
        cut = int(frames * rng.uniform(0.35, 0.65))
        clip = np.concatenate([_render_scene(rng, specs[a], cut, size), _render_scene(rng, specs[b], frames - cut, size)])
        vid = f"video{i}"
        write_mp4(root / "videos" / f"{vid}.mp4", clip)
        verbs = rng.choice(_VERBS, size=3)
        caps = [_describe(specs[a], verbs[0]), _describe(specs[b], verbs[1]),
                f"{_describe(specs[a], verbs[2])}, then {_describe(specs[b], verbs[2])[2:]}"]
        videos.append({"video_id": vid, "split": split, "category": 0, "start time": 0.0, "end time": frames / 8, "id": i})
        if split == "test":
            test_rows.append({"key": f"ret{len(test_rows)}", "vid_key": f"msr{i}", "video_id": vid, "sentence": caps[i % 3]})
        else:
            train_ids.append(vid)
        sentences += [{"caption": c, "video_id": vid, "sen_id": len(sentences) + k} for k, c in enumerate(caps)]
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    for name in ("MSRVTT_train.9k.csv", "MSRVTT_train.7k.csv"):
        with open(root / name, "w", newline="") as f:
            f.write("video_id\n" + "".join(f"{v}\n" for v in train_ids))
    with open(root / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["key", "vid_key", "video_id", "sentence"])
        writer.writeheader()
        writer.writerows(test_rows)
    return root


# ----------------------------------------------------------------------------------------- datamodule
class VideoRetrievalDataModule(ZooDataModule):
    """Caption-video pairs for training, videos with all their captions for evaluation.

    Args:
        path: the dataset root in its real layout (module docstring); ``None`` = the synthetic MSR-VTT.
        dataset: ``msrvtt``, ``msvd`` or ``lsmdc``.
        msrvtt_split: ``9k`` or ``7k`` training csv.
        videos_dir: the video folder under ``path`` (default ``videos``, ``YouTubeClips`` for MSVD).
        num_frames: frames per video (12 in the paper).
        image_size: frame side after crop (the model's ``image_size``).
        context_length: tokens per caption (at most the model's ``context_length``).
        scale, hflip: RandomResizedCrop scale range and flip probability for training.
        synthetic: ``(train, val, test)`` video counts of the offline default.
        batch_size, num_workers, limit: loader settings (``limit`` cuts videos, i.e. evaluation items,
            and caption-video pairs for training).
    """

    def __init__(
        self,
        path: str | None = None,
        dataset: str = "msrvtt",
        msrvtt_split: str = "9k",
        videos_dir: str | None = None,
        num_frames: int = 12,
        image_size: int = 224,
        context_length: int = 77,
        scale: tuple[float, float] = (0.5, 1.0),
        hflip: float = 0.5,
        synthetic: tuple[int, int, int] = (320, 48, 72),
        batch_size: int = 32,
        num_workers: int = 0,
        limit: int | None = None,
    ) -> None:
        super().__init__(path, batch_size, num_workers, limit)
        if dataset not in DATASETS:
            raise ValueError(f"VideoRetrievalDataModule: dataset must be one of {DATASETS}, got {dataset!r}")
        if num_frames < 1 or image_size < 8 or context_length < 3:
            raise ValueError(
                f"VideoRetrievalDataModule: need num_frames >= 1, image_size >= 8, context_length >= 3; got "
                f"{num_frames}, {image_size}, {context_length}"
            )
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 <= hflip <= 1:
            raise ValueError(f"VideoRetrievalDataModule: need 0 < scale[0] <= scale[1] <= 1 and hflip in [0, 1]; got {scale}, {hflip}")
        if len(synthetic) != 3 or min(synthetic) < 1:
            raise ValueError(f"VideoRetrievalDataModule: synthetic needs three counts >= 1, got {synthetic}")
        self.save_hyperparameters()
        self.dataset_name, self.msrvtt_split = dataset, msrvtt_split
        self.videos_dir = videos_dir
        self.num_frames, self.image_size, self.context_length = num_frames, image_size, context_length
        self.scale, self.hflip, self.synthetic = tuple(scale), hflip, tuple(synthetic)
        self.mean, self.std = CLIP_MEAN, CLIP_STD

    def collate_fn(self):
        return collate_retrieval

    def _tokenizer(self) -> Any:
        from open_clip.tokenizer import SimpleTokenizer

        return SimpleTokenizer(context_length=self.context_length)

    def _build(self, splits: dict[str, list[tuple[str, Path | None, list[str]]]], where: str) -> dict[str, Dataset]:
        tokenize = self._tokenizer()
        out: dict[str, Dataset] = {}
        for split in SPLITS:
            videos = _index(splits[split], self.num_frames, f"{split} videos of {where}")
            frames = _Frames(self.num_frames, self.image_size, split == "train", self.scale, self.hflip)
            out[split] = (RetrievalPairs if split == "train" else RetrievalVideos)(videos, frames, tokenize)
        return out

    def load_default(self) -> dict[str, Dataset]:
        train, val, test = self.synthetic
        root = cache_dir("retrieval", f"synthetic_msrvtt_v1_{train}_{val}_{test}")
        if not (root / "MSRVTT_JSFUSION_test.csv").is_file():
            tmp = root.with_name(root.name + ".partial")  # written aside, then renamed: never half a dataset
            shutil.rmtree(tmp, ignore_errors=True)
            write_synthetic_msrvtt(tmp, train, val, test)
            shutil.rmtree(root, ignore_errors=True)
            tmp.rename(root)
        return self._build(read_msrvtt(root, "9k"), f"the synthetic MSR-VTT at {root}")

    def load_path(self, path: Path) -> dict[str, Dataset]:
        if self.dataset_name == "msrvtt":
            splits = read_msrvtt(path, self.msrvtt_split, self.videos_dir or "videos")
        elif self.dataset_name == "msvd":
            splits = read_msvd(path, self.videos_dir or "YouTubeClips")
        else:
            splits = read_lsmdc(path, self.videos_dir or "videos")
        return self._build(splits, f"{self.dataset_name} at {path}")

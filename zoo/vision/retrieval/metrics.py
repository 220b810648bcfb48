"""Text-video retrieval metrics, a similarity matrix computed in chunks, and dual-softmax re-ranking.

``retrieval_metrics(sim, video_of_text)`` follows the official X-Pool / CLIP4Clip definitions:

- ``sim[i, j]`` scores caption ``i`` against video ``j``; ``video_of_text[i]`` is caption ``i``'s video
  (default ``i``: one caption per video, MSR-VTT's 1k-A test);
- text -> video: the rank (from 1) of caption ``i``'s own video in row ``i``;
- video -> text: a video's candidates are the *videos' caption groups*, each scored by the best of its
  captions (the official ``v2t_metrics``: ``max`` over a video's captions, then rank the video's own group);
- R@1/5/10 in percent, MdR (median rank, the mean of the two middle ranks for an even count) and MnR.

Ties, which the official ``argsort`` leaves to the sort's implementation, count against the query here:
the rank is the number of candidates scoring at least as high as the correct one. A constant
similarity therefore gets the worst ranks, not the best.

Everything here keeps memory bounded by the chunk sizes, plus the ``(T, V)`` similarity matrix
itself (MSVD's 27k captions x 670 videos is 72 MB in float32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["retrieval_metrics", "ranks_t2v", "ranks_v2t", "summarize_ranks", "chunked_similarity", "dual_softmax"]

_ROWS = 4096  # caption rows per step of the rank computations


def _checked(sim: Any, video_of_text: Any) -> tuple[Tensor, Tensor]:
    sim = torch.as_tensor(sim).detach().float().cpu()
    if sim.dim() != 2 or 0 in sim.shape:
        raise ValueError(f"retrieval_metrics: sim must be a non-empty (captions, videos) matrix, got shape {tuple(sim.shape)}")
    num_texts, num_videos = sim.shape
    if not bool(torch.isfinite(sim).all()):
        raise ValueError(f"retrieval_metrics: sim has {int((~torch.isfinite(sim)).sum())} NaN or infinite entries")
    if video_of_text is None:
        if num_texts != num_videos:
            raise ValueError(
                f"retrieval_metrics: sim is {num_texts} x {num_videos}; without video_of_text caption i must belong "
                "to video i, so the matrix must be square"
            )
        return sim, torch.arange(num_texts)
    index = torch.as_tensor(video_of_text).long().cpu().flatten()
    if index.numel() != num_texts:
        raise ValueError(f"retrieval_metrics: video_of_text has {index.numel()} entries for {num_texts} captions")
    if int(index.min()) < 0 or int(index.max()) >= num_videos:
        raise ValueError(f"retrieval_metrics: video_of_text must lie in [0, {num_videos}), got [{int(index.min())}, {int(index.max())}]")
    uncaptioned = num_videos - int(torch.unique(index).numel())
    if uncaptioned:
        raise ValueError(f"retrieval_metrics: {uncaptioned} of {num_videos} videos have no caption in video_of_text")
    return sim, index


def ranks_t2v(sim: Tensor, video_of_text: Tensor) -> Tensor:
    """``(T,)`` rank (from 1) of each caption's video among all videos; ties count against it."""
    ranks = torch.empty(sim.shape[0], dtype=torch.long)
    for start in range(0, sim.shape[0], _ROWS):
        rows = sim[start : start + _ROWS]  # (R, V)
        own = rows.gather(1, video_of_text[start : start + _ROWS, None])  # (R, 1)
        ranks[start : start + _ROWS] = (rows >= own).sum(dim=1)
    return ranks


def ranks_v2t(sim: Tensor, video_of_text: Tensor) -> Tensor:
    """``(V,)`` rank (from 1) of each video's caption group, groups scored by their best caption."""
    num_videos = sim.shape[1]
    best = torch.full((num_videos, num_videos), float("-inf"))  # (group, video)
    for start in range(0, sim.shape[0], _ROWS):
        rows = sim[start : start + _ROWS]  # (R, V)
        groups = video_of_text[start : start + _ROWS, None].expand_as(rows)  # (R, V)
        best.scatter_reduce_(0, groups, rows, reduce="amax")
    own = best.diagonal()[None, :]  # (1, V)
    return (best >= own).sum(dim=0)  # (V,)


def summarize_ranks(ranks: Tensor) -> dict[str, float]:
    """R@1/5/10 (percent), MdR and MnR of ranks counted from 1."""
    r = ranks.double().numpy()
    out = {f"R@{k}": float(100.0 * np.mean(r <= k)) for k in (1, 5, 10)}
    out["MdR"] = float(np.median(r))
    out["MnR"] = float(np.mean(r))
    return out


def retrieval_metrics(sim: Any, video_of_text: Any = None) -> dict[str, dict[str, float]]:
    """``{"t2v": {"R@1", "R@5", "R@10", "MdR", "MnR"}, "v2t": {...}}`` of a caption x video similarity.

    Args:
        sim: ``(T, V)`` similarities (tensor or array), ``sim[i, j]`` = caption ``i`` vs video ``j``.
        video_of_text: ``(T,)`` index of each caption's video; default ``i`` (``sim`` square).
    """
    sim, index = _checked(sim, video_of_text)
    return {"t2v": summarize_ranks(ranks_t2v(sim, index)), "v2t": summarize_ranks(ranks_v2t(sim, index))}


def chunked_similarity(
    text: Tensor,
    frames: Tensor,
    score: Callable[[Tensor, Tensor], Tensor],
    *,
    text_chunk: int = 512,
    video_chunk: int = 64,
    out_device: torch.device | str = "cpu",
) -> Tensor:
    """``(T, V)`` = ``score(text_block, frames_block)`` over blocks of captions and videos.

    ``score(text (t, D), frames (v, F, D)) -> (t, v)`` may materialize a ``(v, t, D)`` tensor (X-Pool's
    text-conditioned video embeddings); chunking bounds that to ``video_chunk * text_chunk * D``
    values whatever the number of captions, where the official evaluation holds all ``V * T * D``.
    """
    if text_chunk < 1 or video_chunk < 1:
        raise ValueError(f"chunked_similarity: chunk sizes must be >= 1, got text_chunk={text_chunk}, video_chunk={video_chunk}")
    num_texts, num_videos = text.shape[0], frames.shape[0]
    sim = torch.empty(num_texts, num_videos, dtype=torch.float32, device=out_device)
    for t0 in range(0, num_texts, text_chunk):
        block = text[t0 : t0 + text_chunk]  # (t, D)
        for v0 in range(0, num_videos, video_chunk):
            sim[t0 : t0 + text_chunk, v0 : v0 + video_chunk] = score(block, frames[v0 : v0 + video_chunk]).float()
    return sim


def dual_softmax(sim: Tensor, temperature: float = 100.0, dim: int = 0) -> Tensor:
    """Dual-softmax re-ranking (DSL, Cheng et al. 2021): ``sim * softmax(temperature * sim, dim)``.

    ``dim=0`` normalizes each video's column over the captions, the prior for text -> video; ``dim=1``
    normalizes each caption's row over the videos, for video -> text. It uses the whole test set's
    similarities, so it is reported apart from the plain metrics.
    """
    if temperature <= 0:
        raise ValueError(f"dual_softmax: temperature must be > 0, got {temperature}")
    return sim * torch.softmax(sim * temperature, dim=dim)

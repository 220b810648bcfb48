"""retrieval_metrics against hand-computed rankings; chunked similarity equals the unchunked one."""

from __future__ import annotations

import pytest
import torch

from zoo.vision.retrieval.metrics import chunked_similarity, dual_softmax, retrieval_metrics


def test_one_caption_per_video_hand_ranks():
    sim = torch.tensor([
        [0.9, 0.1, 0.2],   # caption 0: its video 0 first -> rank 1
        [0.8, 0.5, 0.6],   # caption 1: video 1 third -> rank 3
        [0.1, 0.7, 0.3],   # caption 2: video 2 second -> rank 2
    ])
    m = retrieval_metrics(sim)
    assert m["t2v"] == {"R@1": pytest.approx(100 / 3), "R@5": 100.0, "R@10": 100.0, "MdR": 2.0, "MnR": 2.0}
    # video -> text, column by column: video 0 [0.9, 0.8, 0.1] -> 1; video 1 [0.1, 0.5, 0.7] -> 2; video 2 [0.2, 0.6, 0.3] -> 2
    assert m["v2t"]["R@1"] == pytest.approx(100 / 3)
    assert m["v2t"]["MdR"] == 2.0 and m["v2t"]["MnR"] == pytest.approx(5 / 3)


def test_ties_count_against_the_query():
    m = retrieval_metrics(torch.zeros(4, 4))
    assert m["t2v"]["R@1"] == 0.0 and m["t2v"]["MdR"] == 4.0 and m["v2t"]["MnR"] == 4.0
    sim = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    assert retrieval_metrics(sim)["t2v"]["MnR"] == 1.5  # caption 0 tied at the top: rank 2


def test_multiple_captions_per_video_v2t_uses_each_videos_best_caption():
    # 2 videos; captions 0, 1 of video 0, caption 2 of video 1
    sim = torch.tensor([
        [0.2, 0.9],   # video 0's caption scores higher on video 1 -> t2v rank 2
        [0.8, 0.1],   # rank 1
        [0.3, 0.5],   # rank 1
    ])
    vot = torch.tensor([0, 0, 1])
    m = retrieval_metrics(sim, vot)
    assert m["t2v"]["MnR"] == pytest.approx(4 / 3) and m["t2v"]["R@1"] == pytest.approx(200 / 3)
    # video 0: groups {0: max(0.2, 0.8) = 0.8, 1: 0.3} -> rank 1; video 1: {0: max(0.9, 0.1) = 0.9, 1: 0.5} -> rank 2
    assert m["v2t"] == {"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.5, "MnR": 1.5}


def test_ranks_match_a_naive_argsort_without_ties():
    torch.manual_seed(0)
    sim = torch.randn(40, 12)
    vot = torch.arange(40) % 12
    m = retrieval_metrics(sim, vot)
    ranks = [1 + int((sim[i] > sim[i, vot[i]]).sum()) for i in range(40)]
    assert m["t2v"]["MnR"] == pytest.approx(sum(ranks) / 40)
    assert m["t2v"]["R@5"] == pytest.approx(100 * sum(r <= 5 for r in ranks) / 40)
    best = torch.stack([sim[vot == g].max(dim=0).values for g in range(12)])  # (group, video)
    v_ranks = [1 + int((best[:, j] > best[j, j]).sum()) for j in range(12)]
    assert m["v2t"]["MnR"] == pytest.approx(sum(v_ranks) / 12)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="no caption"):
        retrieval_metrics(torch.zeros(2, 3), torch.tensor([0, 1]))


def test_chunked_similarity_equals_unchunked():
    torch.manual_seed(0)
    text, frames = torch.randn(37, 8), torch.randn(11, 5, 8)
    head = torch.nn.Linear(8, 8)

    def score(t, f):  # a text-conditioned score, like X-Pool's: (t, v)
        pooled = (torch.softmax(torch.einsum("td,vfd->vtf", t, f), -1)[..., None] * head(f)[:, None]).sum(2)  # (v, t, D)
        return torch.einsum("td,vtd->tv", t, pooled)

    with torch.no_grad():
        full = score(text, frames)
        for tc, vc in ((1, 1), (5, 3), (100, 100)):
            torch.testing.assert_close(chunked_similarity(text, frames, score, text_chunk=tc, video_chunk=vc), full)


def test_dual_softmax_reranks_by_the_column_prior():
    sim = torch.tensor([[0.9, 0.3], [0.5, 0.4]])  # caption 1 prefers video 0, but video 0 prefers caption 0
    assert retrieval_metrics(sim)["t2v"]["R@1"] == 50.0
    assert retrieval_metrics(dual_softmax(sim, 100.0, dim=0))["t2v"]["R@1"] == 100.0

"""TextVideoRetrieval: a tiny fit + test on the synthetic MSR-VTT, the recipe's groups, the evaluation store."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from zoo.vision.retrieval.data import VideoRetrievalDataModule
from zoo.vision.retrieval.models import TINY_CLIP
from zoo.vision.retrieval.module import RetrievalEmbeddings, TextVideoRetrieval, info_nce


def test_fit_test_logs_metrics_and_writes_the_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    module = TextVideoRetrieval("xpool_vit_b32", overrides=TINY_CLIP, lr=1e-3, clip_lr=1e-4, dual_softmax_temperature=100.0)
    dm = VideoRetrievalDataModule(image_size=32, context_length=16, num_frames=4, synthetic=(4, 3, 3), batch_size=4, hflip=0.0)
    trainer = pl.Trainer(max_steps=3, logger=pl.loggers.CSVLogger(tmp_path), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, dm)
    assert math.log(100) >= module.model.clip.logit_scale.item()
    groups = trainer.optimizers[0].param_groups
    assert sorted({g["initial_lr"] for g in groups}) == [1e-4, 1e-3]
    assert {g["weight_decay"] for g in groups} == {0.0, 0.2}
    assert "val/t2v/R@1" in trainer.callback_metrics
    (result,) = trainer.test(module, dm)
    for key in ("t2v/R@1", "t2v/MdR", "v2t/MnR", "dsl_t2v/R@5", "dsl_v2t/R@10"):
        assert f"test/{key}" in result
    assert result["test/t2v/MdR"] >= 1 and 0 <= result["test/v2t/R@1"] <= 100
    figure = next(c for c in trainer.callbacks if type(c).__name__ == "RetrievalFigure")
    assert figure.written is not None and figure.written.stat().st_size > 10_000


def test_image_size_mismatch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    module = TextVideoRetrieval("meanpool_vit_b32", overrides=TINY_CLIP)
    dm = VideoRetrievalDataModule(image_size=64, context_length=16, num_frames=2, synthetic=(2, 1, 1))
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="image_size 64 differs from the model's 32"):
        trainer.fit(module, dm)


def test_embedding_store_orders_and_deduplicates():
    store = RetrievalEmbeddings()
    text = torch.arange(5.0)[:, None].expand(5, 2)
    # batch 1: videos 2 (2 captions) and 0 (1 caption); batch 2: video 1 (1 caption) and video 2 repeated (2 captions)
    store.update(text[:3], torch.tensor([2.0, 0.0])[:, None, None].expand(2, 1, 2), torch.tensor([0, 0, 1]), torch.tensor([2, 0]))
    store.update(text[:3] + 10, torch.tensor([1.0, 2.0])[:, None, None].expand(2, 1, 2), torch.tensor([0, 1, 1]), torch.tensor([1, 2]))
    t, f, vot = store.compute()
    assert f[:, 0, 0].tolist() == [0.0, 1.0, 2.0]
    assert t[:, 0].tolist() == [2.0, 10.0, 0.0, 1.0] and vot.tolist() == [0, 1, 2, 2]


def test_info_nce_is_symmetric_cross_entropy():
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    scale = torch.tensor(10.0)
    expected = 0.5 * (torch.nn.functional.cross_entropy(sim * 10, torch.arange(2))
                      + torch.nn.functional.cross_entropy(sim.T * 10, torch.arange(2)))
    torch.testing.assert_close(info_nce(sim, scale), expected)

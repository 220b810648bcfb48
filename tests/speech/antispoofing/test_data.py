"""Protocol readers on fixtures in the real formats (a missing flac included), the generator's layout,
crops, and the datamodule."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from zoo.speech.antispoofing.data import (
    ATTACKS,
    ASVspoofDataModule,
    SpoofDataset,
    asvspoof2019_split,
    fit_length,
    index_trials,
    read_2021_metadata,
    read_cm_protocol,
    read_itw_meta,
)


def _flac(path, seconds=0.3, sr=16_000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.1 * np.sin(np.arange(int(seconds * sr)) * 0.05)).astype(np.float32), sr)


def test_cm_protocol_reader_and_a_missing_flac(tmp_path):
    proto = tmp_path / "ASVspoof2019.LA.cm.train.trn.txt"
    proto.write_text("LA_0079 LA_T_1138215 - - bonafide\nLA_0079 LA_T_1271820 - A01 spoof\nLA_0080 LA_T_9999999 - A05 spoof\n")
    _flac(tmp_path / "flac" / "LA_T_1138215.flac")
    _flac(tmp_path / "flac" / "LA_T_1271820.flac")
    trials = read_cm_protocol(proto, tmp_path / "flac")
    assert [(t.utt, t.speaker, t.attack, t.label) for t in trials] == [
        ("LA_T_1138215", "LA_0079", "-", 1), ("LA_T_1271820", "LA_0079", "A01", 0), ("LA_T_9999999", "LA_0080", "A05", 0),
    ]
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 .*LA_T_9999999\.flac"):
        kept = index_trials(trials, "train audio files")
    assert [t.utt for t in kept] == ["LA_T_1138215", "LA_T_1271820"]


def test_cm_protocol_errors_name_file_and_line(tmp_path):
    proto = tmp_path / "p.txt"
    proto.write_text("LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_2 - A01\n")
    with pytest.raises(ValueError, match=r"p\.txt:2: expected 'SPEAKER UTT - SYSTEM KEY'"):
        read_cm_protocol(proto, tmp_path)
    proto.write_text("LA_0079 LA_T_1 - - genuinely\n")
    with pytest.raises(ValueError, match=r"p\.txt:1: key must be"):
        read_cm_protocol(proto, tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        read_cm_protocol(tmp_path / "none.txt", tmp_path)


def test_2021_metadata_and_in_the_wild(tmp_path):
    meta = tmp_path / "trial_metadata.txt"
    meta.write_text(
        "LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval\n"
        "LA_0007 LA_E_5013670 none - bonafide bonafide notrim progress\n"
        "LA_0043 DF_E_2000026 mp3m4a asvspoof A09 spoof notrim eval traditional_vocoder - - - -\n"
        "LA_0043 DF_E_2000027 mp3m4a asvspoof bonafide bonafide notrim eval bonafide - - - -\n"
    )
    trials = read_2021_metadata(meta, tmp_path / "flac")
    assert [(t.utt, t.attack, t.label) for t in trials] == [
        ("LA_E_9332881", "A07", 0), ("DF_E_2000026", "A09", 0), ("DF_E_2000027", "-", 1),
    ]
    assert len(read_2021_metadata(meta, tmp_path / "flac", subset=None)) == 4
    itw = tmp_path / "itw"
    itw.mkdir()
    (itw / "meta.csv").write_text("file,speaker,label\n0.wav,Alec Guinness,spoof\n1.wav,Alec Guinness,bona-fide\n")
    trials = read_itw_meta(itw / "meta.csv")
    assert [(t.path.name, t.attack, t.label) for t in trials] == [("0.wav", "itw", 0), ("1.wav", "-", 1)]
    (itw / "meta.csv").write_text("path,who,is_fake\n0.wav,A,1\n")
    with pytest.raises(ValueError, match="file,speaker,label"):
        read_itw_meta(itw / "meta.csv")


def test_generator_writes_the_asvspoof2019_layout(tiny_corpus):
    splits = {s: asvspoof2019_split(tiny_corpus, s) for s in ("train", "dev", "eval")}
    assert {t.attack for t in splits["train"] if not t.label} == {"A01", "A02", "A03", "A04"}
    assert {t.attack for t in splits["eval"] if not t.label} == set(ATTACKS)  # A05, A06 unseen in training
    speakers = [{t.speaker for t in trials} for trials in splits.values()]
    assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
    for trials in splits.values():
        assert {trials[0].label, trials[1].label} == {0, 1}  # both classes in every stretch of a protocol
        for t in trials:
            info = sf.info(str(t.path))
            assert info.samplerate == 16_000 and info.format == "FLAC" and 0.4 < info.duration < 0.8


def test_dataset_crops_and_repeats_short_audio(tiny_corpus):
    trials = asvspoof2019_split(tiny_corpus, "train")
    ds = SpoofDataset(trials, crop=16_000, random_crop=True, seen_attacks={"A01"})
    item = ds[0]
    assert item["wave"].shape == (16_000,) and item["wave"].dtype == torch.float32  # 0.5-0.7 s repeated to 1 s
    spoofed = next(i for i, t in enumerate(trials) if t.label == 0 and t.attack != "A01")
    assert bool(ds[spoofed]["unseen"])
    assert not any(bool(ds[i]["unseen"]) for i, t in enumerate(trials) if t.label == 1)
    np.testing.assert_array_equal(fit_length(np.arange(3.0), 7), [0, 1, 2, 0, 1, 2, 0])
    whole = SpoofDataset(trials, crop=None, random_crop=False)
    assert whole[0]["wave"].shape[0] == sf.info(str(trials[0].path)).frames


def test_datamodule_on_the_real_layout_with_a_missing_file(tiny_corpus, tmp_path):
    root = tmp_path / "LA"
    shutil.copytree(tiny_corpus, root)
    victim = asvspoof2019_split(root, "dev")[0].path
    victim.unlink()
    dm = ASVspoofDataModule(path=str(root), crop_seconds=0.5, eval_seconds=None, batch_size=2)
    with pytest.warns(UserWarning, match=r"skipped 1 of \d+ dev audio files"):
        dm.setup()
    assert dm.seen_attacks == {"A01", "A02", "A03", "A04"}
    assert dm.class_counts == (8, 4)
    batch = next(iter(dm.train_dataloader()))
    assert batch["wave"].shape == (2, 8000) and batch["label"].shape == (2,)
    test_batch = next(iter(dm.test_dataloader()))
    assert test_batch["wave"].shape[0] == 1  # whole utterances: one per batch
    unseen = [b for b in dm.test_dataloader() if bool(b["unseen"][0])]
    assert {b["attack"][0] for b in unseen} == {"A05", "A06"}


def test_datamodule_eval_path_in_the_wild(tiny_corpus, tmp_path):
    itw = tmp_path / "release_in_the_wild"
    _flac(itw / "0.wav")
    _flac(itw / "1.wav")
    (itw / "meta.csv").write_text("file,speaker,label\n0.wav,A,spoof\n1.wav,B,bona-fide\n")
    dm = ASVspoofDataModule(path=str(tiny_corpus), eval_path=str(itw), crop_seconds=0.5, eval_seconds=0.5, batch_size=2)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    assert batch["utt"] == ["0", "1"] and batch["label"].tolist() == [0, 1] and batch["unseen"].tolist() == [True, False]
    with pytest.raises(ValueError, match="eval_path"):
        ASVspoofDataModule(path=str(tiny_corpus), eval_path=str(tmp_path)).setup()


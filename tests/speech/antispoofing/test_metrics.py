"""EER against hand-computed cases and an independent ROC computation; min t-DCF on a worked example."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from zoo.speech.antispoofing import metrics as M


@pytest.mark.parametrize(
    "scores, labels, expected",
    [
        ([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0], 0.0),  # separated
        ([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], 1.0),  # every decision wrong
        ([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0], 0.5),  # threshold 0.6: miss 1/2 (0.4), false alarm 1/2 (0.6)
        ([4, 3, 2, 1, 3.5, 0, -1, -2], [1, 1, 1, 1, 0, 0, 0, 0], 0.25),  # t = 3.5: miss 2/4 vs fa 1/4; t = 3: 1/4 vs 1/4
        ([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0], 0.5),  # all tied
    ],
)
def test_eer_hand_computed(scores, labels, expected):
    assert M.eer(scores, labels) == pytest.approx(expected)


def test_eer_matches_an_independent_roc():
    rng = np.random.default_rng(0)
    for n_bona, n_spoof, shift in [(200, 1800, 1.0), (500, 500, 2.5), (50, 950, 0.3)]:
        scores = np.concatenate([rng.normal(shift, 1, n_bona), rng.normal(0, 1, n_spoof)])
        labels = np.concatenate([np.ones(n_bona, int), np.zeros(n_spoof, int)])
        fpr, tpr, _ = roc_curve(labels, scores, pos_label=1, drop_intermediate=False)
        fnr = 1 - tpr
        i = np.nanargmin(np.abs(fnr - fpr))
        reference = (fnr[i] + fpr[i]) / 2
        # continuous scores: both curves step by at most 1 / min(class size) between thresholds
        assert abs(M.eer(scores, labels) - reference) <= 1.0 / min(n_bona, n_spoof)
        assert 0.0 <= M.eer(scores, labels) <= 1.0


def test_eer_is_invariant_to_monotone_maps_and_flips_with_the_sign():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=300)
    labels = (rng.random(300) < 0.3).astype(int)
    scores = scores + labels
    e = M.eer(scores, labels)
    assert M.eer(np.exp(scores), labels) == pytest.approx(e)
    assert M.eer(-scores, labels) > 0.5 > e


def test_eer_refuses_bad_input():
    with pytest.raises(ValueError, match="both classes"):
        M.eer([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="differ in length"):
        M.eer([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="labels must be 1"):
        M.eer([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        M.eer([np.nan, 0.2], [1, 0])


def test_min_tdcf_worked_example():
    # ASV: targets 3, 4, 5 vs non-targets 0, 1, 2 -> EER threshold 3: P_miss_asv = P_fa_asv = 0;
    # spoofs 4 and 1 -> P_miss_spoof_asv = 1/2. ASVspoof 2019 costs:
    #   C1 = 0.99 * 0.95 * 1 = 0.9405, C2 = 10 * 0.05 * (1 - 1/2) = 0.25.
    # CM: bona fide 0.9, 0.8; spoofs 0.1, 0.85. Thresholds and (P_miss_cm, P_fa_cm):
    #   <= 0.1 (0, 1) -> 0.25 / 0.25 = 1;  (0.1, 0.8] (0, 1/2) -> 0.125 / 0.25 = 0.5;
    #   (0.8, 0.85] (1/2, 1/2) -> 0.59525 / 0.25 = 2.381;  (0.85, 0.9] (1/2, 0) -> 1.881;  > 0.9 (1, 0) -> 3.762
    cm_scores, cm_labels = [0.9, 0.8, 0.1, 0.85], [1, 1, 0, 0]
    value = M.min_tdcf(cm_scores, cm_labels, asv_target=[3, 4, 5], asv_nontarget=[0, 1, 2], asv_spoof=[4, 1])
    assert value == pytest.approx(0.5)
    # a perfect CM costs nothing; a CM that accepts everything costs C2 / min(C1, C2) = 1 at best
    assert M.min_tdcf([0.9, 0.8, 0.1, 0.2], cm_labels, [3, 4, 5], [0, 1, 2], [4, 1]) == pytest.approx(0.0)
    assert M.min_tdcf([0.1, 0.2, 0.9, 0.8], cm_labels, [3, 4, 5], [0, 1, 2], [4, 1]) == pytest.approx(1.0)


def test_min_tdcf_refuses_an_asv_that_leaves_the_cm_nothing():
    with pytest.raises(ValueError, match="undefined"):  # every spoof already rejected by the ASV: C2 = 0
        M.min_tdcf([0.9, 0.1], [1, 0], [3, 4, 5], [0, 1, 2], [-1, -2])


def test_per_attack_eer_and_score_files(tmp_path):
    scores = [0.9, 0.8, 0.7, 0.95, 0.1, 0.2]
    labels = [1, 1, 1, 0, 0, 0]
    attacks = ["-", "-", "-", "A01", "A02", "A02"]
    per = M.per_attack_eer(scores, labels, attacks)
    # A01: its one spoof outscores every bona fide trial, so miss and false alarm only meet at 1
    assert per == {"A01": pytest.approx(1.0), "A02": pytest.approx(0.0)}
    path = M.write_scores(tmp_path / "scores.txt", ["u1", "u2", "u3", "u4", "u5", "u6"], attacks, labels, scores)
    lines = path.read_text().splitlines()
    assert lines[0] == "u1 - bonafide 0.900000" and lines[3] == "u4 A01 spoof 0.950000"
    asv = tmp_path / "asv.txt"
    asv.write_text("target bonafide 3.0\nnontarget bonafide -1.5\nspoof A01 2.0\n")
    got = M.read_asv_scores(asv)
    assert got["target"].tolist() == [3.0] and got["nontarget"].tolist() == [-1.5] and got["spoof"].tolist() == [2.0]
    asv.write_text("target bonafide\n")
    with pytest.raises(ValueError, match="asv.txt:1"):
        M.read_asv_scores(asv)

"""Evaluation of spoofing countermeasures (CMs): EER, min t-DCF, per-attack EER, ASVspoof score files.

Conventions everywhere here: label 1 = bona fide (the positive class), 0 = spoof; a higher score means
more likely bona fide; a trial is accepted as bona fide when its score is ``>= threshold``.

- :func:`det_curve`: miss rate (bona fide rejected) and false-alarm rate (spoof accepted) at every
  threshold that changes them; :func:`eer`: where they cross, a fraction in [0, 1].
- :func:`min_tdcf`: the ASVspoof 2019 tandem detection cost function (Kinnunen et al., "t-DCF: a
  detection cost function for the tandem assessment of spoofing countermeasures and automatic speaker
  verification", Odyssey 2018; the ASVspoof 2019 evaluation plan's cost model), normalized, minimized
  over the CM threshold, with the ASV system fixed at its own EER threshold.
- :func:`per_attack_eer`: EER of the bona fide trials against each attack's spoofs.
- :func:`write_scores` / :func:`read_asv_scores`: the ASVspoof text formats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "det_curve",
    "eer",
    "eer_threshold",
    "CostModel",
    "ASVSPOOF2019_COSTS",
    "min_tdcf",
    "per_attack_eer",
    "write_scores",
    "read_asv_scores",
]


def _split(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} vs {y.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 1 (bona fide) or 0 (spoof), got values {sorted(set(y.tolist()))[:5]}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    bona, spoof = s[y == 1], s[y == 0]
    if bona.size == 0 or spoof.size == 0:
        raise ValueError(f"need both classes: {bona.size} bona fide and {spoof.size} spoofed trials")
    return bona, spoof


def det_curve(bona: np.ndarray, spoof: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(miss, false_alarm, thresholds)`` with ``miss[i] = P(bona < t_i)`` and ``fa[i] = P(spoof >= t_i)``.

    The thresholds are every distinct score plus one above the largest (everything rejected), so the
    curve runs from (miss 0, fa 1) to (miss 1, fa 0).
    """
    bona, spoof = np.sort(np.asarray(bona, np.float64)), np.sort(np.asarray(spoof, np.float64))
    thresholds = np.unique(np.concatenate([bona, spoof]))
    thresholds = np.append(thresholds, np.nextafter(thresholds[-1], np.inf))
    miss = np.searchsorted(bona, thresholds, side="left") / bona.size  # bona fide with score < t
    fa = 1.0 - np.searchsorted(spoof, thresholds, side="left") / spoof.size  # spoofs with score >= t
    return miss, fa, thresholds


def eer_threshold(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """``(eer, threshold)``: the DET point where miss and false-alarm rates are closest; EER their mean."""
    miss, fa, thresholds = det_curve(*_split(scores, labels))
    i = int(np.argmin(np.abs(miss - fa)))
    return float((miss[i] + fa[i]) / 2), float(thresholds[i])


def eer(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Equal error rate of ``scores`` (higher = more likely bona fide) against ``labels`` (1 = bona fide),
    a fraction in [0, 1]."""
    return eer_threshold(scores, labels)[0]


@dataclass(frozen=True)
class CostModel:
    """t-DCF priors and costs: spoof prior, target / non-target priors, ASV and CM miss / false-alarm costs."""

    p_spoof: float = 0.05
    p_tar: float = 0.99 * (1 - 0.05)
    p_non: float = 0.01 * (1 - 0.05)
    c_miss_asv: float = 1.0
    c_fa_asv: float = 10.0
    c_miss_cm: float = 1.0
    c_fa_cm: float = 10.0


#: the ASVspoof 2019 evaluation plan's cost model
ASVSPOOF2019_COSTS = CostModel()


def min_tdcf(
    cm_scores: Sequence[float] | np.ndarray,
    cm_labels: Sequence[int] | np.ndarray,
    asv_target: Sequence[float] | np.ndarray,
    asv_nontarget: Sequence[float] | np.ndarray,
    asv_spoof: Sequence[float] | np.ndarray,
    costs: CostModel = ASVSPOOF2019_COSTS,
) -> float:
    """Minimum normalized t-DCF (ASVspoof 2019 form).

    The ASV system is fixed at its EER threshold ``t_asv`` (target vs non-target ASV scores), giving
    ``P_miss_asv = P(target < t_asv)``, ``P_fa_asv = P(nontarget >= t_asv)`` and
    ``P_miss_spoof_asv = P(spoof < t_asv)``. Then, over CM thresholds ``s``::

        C1 = p_tar (c_miss_cm - c_miss_asv P_miss_asv) - p_non c_fa_asv P_fa_asv
        C2 = c_fa_cm p_spoof (1 - P_miss_spoof_asv)
        t-DCF(s) = (C1 P_miss_cm(s) + C2 P_fa_cm(s)) / min(C1, C2)

    and the result is ``min_s t-DCF(s)``.
    """
    tar, non, asv_sp = (np.asarray(a, np.float64).reshape(-1) for a in (asv_target, asv_nontarget, asv_spoof))
    if tar.size == 0 or non.size == 0 or asv_sp.size == 0:
        raise ValueError(f"min_tdcf needs ASV target, non-target and spoof scores; got {tar.size}, {non.size}, {asv_sp.size}")
    _, t_asv = eer_threshold(np.concatenate([tar, non]), np.concatenate([np.ones(tar.size), np.zeros(non.size)]))
    p_miss_asv = float(np.mean(tar < t_asv))
    p_fa_asv = float(np.mean(non >= t_asv))
    p_miss_spoof_asv = float(np.mean(asv_sp < t_asv))
    c1 = costs.p_tar * (costs.c_miss_cm - costs.c_miss_asv * p_miss_asv) - costs.p_non * costs.c_fa_asv * p_fa_asv
    c2 = costs.c_fa_cm * costs.p_spoof * (1 - p_miss_spoof_asv)
    if c1 <= 0 or c2 <= 0:
        raise ValueError(
            f"t-DCF is undefined for this ASV system (C1 = {c1:.4g}, C2 = {c2:.4g}): the ASV scores or the "
            "cost model leave nothing for the CM to do"
        )
    miss_cm, fa_cm, _ = det_curve(*_split(cm_scores, cm_labels))
    return float(np.min(c1 * miss_cm + c2 * fa_cm) / min(c1, c2))


def per_attack_eer(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, attacks: Sequence[str]
) -> dict[str, float]:
    """``{attack: EER of all bona fide trials vs that attack's spoofs}`` for every attack among the spoofs."""
    s, y, a = np.asarray(scores, np.float64), np.asarray(labels), np.asarray(list(attacks), dtype=object)
    if not (s.shape[0] == y.shape[0] == a.shape[0]):
        raise ValueError(f"scores, labels and attacks differ in length: {s.shape[0]}, {y.shape[0]}, {a.shape[0]}")
    bona = y == 1
    out = {}
    for attack in sorted({str(x) for x in a[~bona]}):
        keep = bona | (a == attack)
        out[attack] = eer(s[keep], y[keep])
    return out


def write_scores(
    path: str | Path, utterances: Iterable[str], attacks: Iterable[str], labels: Iterable[int], scores: Iterable[float]
) -> Path:
    """An ASVspoof-style CM score file: ``UTT ATTACK KEY SCORE`` per line (KEY ``bonafide`` / ``spoof``;
    ATTACK ``-`` for bona fide), the layout of the ASVspoof 2019 baselines' score files."""
    path = Path(path)
    lines = [
        f"{utt} {attack if label == 0 else '-'} {'bonafide' if label == 1 else 'spoof'} {score:.6f}"
        for utt, attack, label, score in zip(utterances, attacks, labels, scores)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_asv_scores(path: str | Path) -> Mapping[str, np.ndarray]:
    """An ASVspoof 2019 ASV score file (``ASVspoof2019.LA.asv.eval.gi.trl.scores.txt``): lines
    ``KEY ATTACK SCORE`` with KEY ``target`` / ``nontarget`` / ``spoof``. Returns the three score arrays."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ASV score file {path} does not exist")
    groups: dict[str, list[float]] = {"target": [], "nontarget": [], "spoof": []}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[0] not in groups:
            raise ValueError(f"{path}:{n}: expected 'target|nontarget|spoof ATTACK SCORE', got {line!r}")
        try:
            groups[parts[0]].append(float(parts[2]))
        except ValueError as err:
            raise ValueError(f"{path}:{n}: score {parts[2]!r} is not a number") from err
    return {k: np.asarray(v) for k, v in groups.items()}

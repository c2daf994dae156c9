"""What each headline column's values mean in a regime: the report's "Reading the columns" (docs/metrics.md).

:func:`readings` gives, for a regime family and label, what 0, 0.5 and 1 of UA, RA, TA, MIA-efficacy, mia_auc,
avg_gap and RTE mean there, and where the gold's value should lie (sragu_core/evaluate.py, docs/design.md §5-6);
:func:`family_of` finds a regime's family from the rows or its label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from sragu_core.forget import REGIMES

from .tables import FLOOR_METHOD, HEADLINE

__all__ = ["family_of", "readings"]


def family_of(cells: pd.DataFrame, regime: str) -> str:
    """The regime's family: the rows' first ``regime_family``, else the registered regime its label starts with."""
    fam = cells["regime_family"].dropna() if "regime_family" in cells else pd.Series(dtype=object)
    return str(fam.iloc[0]) if len(fam) else (_base_regime(regime) or "")


def _base_regime(label: str) -> str | None:
    """The registered regime a label was made from (``high_loss_fitted_10pct`` → ``high_loss_fitted``; the longest
    name that the label starts with, followed by ``_`` or nothing), or None."""
    hits = [n for n in REGIMES if label == n or label.startswith(n + "_")]
    return max(hits, key=len) if hits else None


@dataclass(frozen=True)
class _Reading:
    """What a regime does to the headline columns (sragu_core/evaluate.py, docs/design.md §5-6): where the gold's UA
    lies, a note on TA, where the gold's MIA-efficacy lies, mia_auc's non-members and what mia_auc shows there."""

    ua: str
    ta: str
    mia_eff: str
    nonmembers: str
    mia_auc: str


_LOW_AUC = ("a value far below 0.5 — 0.07, say — means that in 93% of (forget, non-member) pairs the forget point has "
            "the higher loss")
_RULE_AUC = (f"The two selections are not alike, so even the gold need not sit at 0.5: {_LOW_AUC}. D_f holds the "
             "points θ0 fitted worst although it trained on them (atypical, ambiguous or mislabelled), which a model "
             "that no longer fits them — the gold included — gives a very high loss, higher than most of the test "
             "points the rule picks, and far higher than a random test sample (the fallback when the rule picks no "
             "test point). That is the selection showing, not membership")
_RANDOM_TEST = "a random sample of D_test of |D_f| points"
_READINGS = {
    "random": _Reading(
        "D_f is a uniform sample of the training data, so the gold misclassifies about as much of it as of D_test: "
        "its UA is near its test error (1 − TA), small; a UA well above it is over-forgetting", "",
        "D_f looks like D_r to θ0 and like D_test to the gold, so the gold's value is about the share of D_test the "
        "SVC calls unseen", "a random sample of D_test of the same fraction",
        "Forget points and non-members are drawn alike, so a retrained model sits near 0.5 and θ0 above it by as "
        "much as it overfits"),
    "class": _Reading(
        "the gold never saw the class, so it (almost) never predicts it: its UA is near 1, and here 1 is the target",
        "D_test includes the forgotten class's test points, which the gold misclassifies too, so its TA is below "
        "θ0's by about that class's share of D_test (`test_acc_other_classes` has the other classes)",
        "the gold's p[y] on the forgotten class is near 0, below almost every test point's, so its value is near 1",
        "D_test's points of the same class(es)",
        "A retrained model has a high loss on both, so it sits near 0.5; above 0.5, the class's training points are "
        "still fitted better than its unseen ones"),
    "class_concentrated": _Reading(
        "D_f is a whole class plus the points of its most-confused neighbour class that θ0 rates most like it: the "
        "gold misses the class part almost entirely and part of the neighbour part, so its UA is high but below 1",
        "D_test includes the forgotten class's test points, which the gold misclassifies, so its TA is below θ0's",
        "high for the gold: near 1 on the class part", "the points the same rule picks from D_test",
        "Selected alike, so a retrained model sits near 0.5 up to the selection's own bias (the gold's row shows "
        "it)"),
    "rule": _Reading(
        "D_f is θ0's top training points by the rule — atypical, ambiguous or mislabelled points, some θ0 never "
        "fitted — so the gold, which never saw them, gets many wrong: its UA is high (it can exceed 0.5), and θ0's "
        "(`original`) is above 0 too", "",
        "low-confidence points look unseen to the SVC even under θ0 (the no-op can score near 1), so a value near 1 "
        "is not by itself forgetting: compare the gold's and `original`'s rows",
        "the test points θ0 ranks top by the same rule", _RULE_AUC),
    "fitted": _Reading(
        "D_f is points θ0 classifies correctly but with low confidence (by the rule), so θ0's UA is 0 by "
        "construction; the gold, never seeing them, gets a share wrong: the target lies between 0 and 1, at the "
        "gold's value", "",
        "low-confidence points look unseen to the SVC even under θ0, so compare the gold's and `original`'s rows, "
        "not 1", "the test points θ0 classifies correctly and ranks top by the same rule (a random sample when it "
        "fits too few)", _RULE_AUC),
    "memorised": _Reading(
        "D_f is the points θ0's recipe gets right mostly when they are in the training set (Feldman–Zhang "
        "memorisation), so θ0's UA is near 0 and the gold's high", "",
        "high for the gold: unseen, these points get low confidence",
        f"{_RANDOM_TEST} (memorisation has no held-out estimate)",
        f"Memorised points are atypical, so a model that has not memorised them — the gold — gives them a higher "
        f"loss than typical test points and sits well below 0.5 ({_LOW_AUC}); θ0, which fits them, sits above. "
        "That is the selection as much as membership"),
    "mislabelled": _Reading(
        "D_f's labels were flipped before training and UA counts disagreement with the flipped label: the gold, "
        "trained without them, predicts mostly the true class, so its UA is near 1; θ0's is as low as it memorised "
        "the wrong labels", "",
        "the gold's p[y] of a flipped label is near 0, so its value is near 1",
        f"{_RANDOM_TEST}, with their true labels (no test label is flipped)",
        "Against a wrong label every model that has not memorised it has a very high loss, far above a random test "
        "point's: the gold sits near 0, the extreme of the selection showing, and θ0 higher as far as it memorised "
        "the flips"),
    "duplicates_one": _Reading(
        "D_f is the appended copies, whose twins stay in D_r: the gold still trains on identical points, so its UA "
        "is near its training error, near 0 — there is nothing to remove, and raising UA moves away from the gold",
        "", "the gold sees D_f as it sees D_r, so its value is low, like its value on training data",
        _RANDOM_TEST, "The gold still fits D_f through the twins, so it sits above 0.5 like θ0"),
    "duplicates_all": _Reading(
        "D_f is the chosen points and all their copies, so nothing of them is left: as in a random deletion, the "
        "gold's UA is near its test error", "",
        "as in a random deletion, about the share of D_test the SVC calls unseen", _RANDOM_TEST,
        "The copies weighted these points up in θ0's training, so θ0 sits further above 0.5 than on a random "
        "deletion; a retrained model near 0.5"),
    "subpopulation": _Reading(
        "D_f is one cluster of one class in θ0's feature space: the gold learns the class from its other clusters, "
        "so its UA lies between a random deletion's (small) and a class deletion's (near 1), higher the more "
        "distinct the cluster", "", "the gold's value, higher the more distinct the cluster",
        "the class's test points nearest the cluster's centroid",
        "Selected alike as far as those test points resemble the cluster, so a retrained model sits near 0.5"),
}
_GENERIC = _Reading("the gold's value is the target", "", "the gold's value is the target",
                    "held-out points the regime's rule picks from D_test, or a random sample of D_test", "")
_GROUP = {"top_sensitivity": "rule", "high_loss": "rule", "low_margin": "rule", "top_sensitivity_fitted": "fitted",
          "high_loss_fitted": "fitted", "low_margin_fitted": "fitted"}


def _reading_of(base: str, label: str) -> _Reading:
    group = _GROUP.get(base, base)
    if group == "duplicates":  # the label ends in the dup_forget choice: duplicates_5pct_one[_x3]
        group = "duplicates_all" if "_all" in label else "duplicates_one"
    return _READINGS.get(group, _GENERIC)


def readings(family: str, regime: str, columns: Sequence[str] = tuple(c.key for c in HEADLINE)) -> list[str]:
    """What 0, 0.5 and 1 of each headline column mean in a regime of ``family`` labelled ``regime``: a lead line and
    one bullet per column in ``columns`` (keys of ``HEADLINE``). A sequential family reads as its one-request
    regime, named by the label."""
    base = family
    lead = f"Reading the columns (`{family or 'unknown family'}`):"
    if family == "sequential" or family not in REGIMES:
        base = _base_regime(regime) or family
        if family == "sequential":
            lead = (f"Reading the columns (`sequential`: D_f deleted in successive requests, the model after the last "
                    f"one against the one-request regime's gold; as `{base}`):")
    rd = _reading_of(base, regime)
    text = {
        "UA": "1 − forget_acc, the share of D_f the model gets wrong (0: every forget point still classified as "
              f"labelled; 1: none; 0.5: half). The target is the gold's UA, not 1: {rd.ua}.",
        "RA": "retain_acc, accuracy on D_r (1: every kept training point right; chance is 1/C, 0.1 for 10 classes). "
              "Below the gold's is damage to what should be kept.",
        "TA": "test_acc on D_test (same scale as RA). " + (f"{rd.ta}." if rd.ta else
                                                             "The gold's is what retraining keeps."),
        "MIA-efficacy": "SalUn's attack: an SVC on the confidence p[y] learns D_r (members) against D_test, and this "
                        "is the share of D_f it calls unseen (0: all of D_f looks like training data; 1: all looks "
                        f"unseen; 0.5: half). The target is the gold's value, not 1: {rd.mia_eff}.",
        "mia_auc": f"ROC-AUC of a loss threshold, D_f as members against {rd.nonmembers} (0.5: their losses cannot "
                   "be told apart; 1: every forget point has a lower loss than every non-member, still fitted like "
                   "training data; 0: every forget point has the higher loss). "
                   + (f"{rd.mia_auc}. " if rd.mia_auc else "")
                   + "Compare with the gold's value (`mia_gap`), not with 0.5.",
        "avg_gap": "SalUn's Avg. Gap, the mean |x − x_gold| over UA, RA, TA and MIA-efficacy (0: the gold's four "
                   "values; each term is at most 1, so 0.5 is far off). "
                   f"`{FLOOR_METHOD}`'s value is the noise floor.",
        "RTE": "t_gold / t_method (1: as long as retraining; 10: a tenth of its time; 0.5: twice as long). The gold is "
               "1 by definition; `original` does no work, so its RTE says nothing.",
    }
    return [lead, "", *(f"- **{k}**: {text[k]}" for k in columns if k in text)]

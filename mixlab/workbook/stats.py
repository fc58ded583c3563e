"""Paired significance tests between clustering methods (scipy-based).

TCC's supplement (Table 3) reports p-values of a chi-squared test for every pair of methods. For
two clusterings of the *same* images the paired chi-squared test is McNemar's: map each method's
clusters to classes (Hungarian, as ACC does), mark every image right or wrong, and test whether
the discordant images (right for one method, wrong for the other) split evenly. It uses the
image-level pairing, so it has power with few training seeds, where a t-test over 3 seeds has 2
degrees of freedom. Caveat: it conditions on the trained models (variability over images, not
over training runs); pooling the discordant counts over seeds (:func:`paired_test`) brings the
seed-to-seed variability in, and :func:`paired_t` gives the seed-level test beside it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as sps
from scipy.optimize import linear_sum_assignment

from mixlab import rundir
from mixlab.metrics import contingency

__all__ = ["matched_correct", "mcnemar", "paired_test", "pairwise_pvalues", "paired_t", "pvalue_report"]


def matched_correct(y_true, y_pred) -> np.ndarray:
    """Boolean per image: is its cluster mapped to its class by the ACC-optimal one-to-one map?
    (``mean()`` of the result is :func:`mixlab.metrics.cluster_acc`.)"""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels, y_pred {y_pred.size}")
    classes, t = np.unique(y_true, return_inverse=True)
    clusters, p = np.unique(y_pred, return_inverse=True)
    m = contingency(t, p)  # [clusters, classes], see mixlab.metrics
    rows, cols = linear_sum_assignment(m, maximize=True)
    mapping = np.full(len(clusters), -1)
    mapping[rows] = cols
    return mapping[p] == t


def mcnemar(correct_a, correct_b, *, exact: bool | None = None) -> dict:
    """McNemar's test on paired right/wrong indicators (or on counts ``b``, ``c`` via
    :func:`_mcnemar_counts`).

    ``b`` = right for A only, ``c`` = right for B only. H0: a discordant image is equally likely to
    favour either method. ``exact=None`` uses the exact binomial test when ``b + c < 25`` and the
    chi-squared statistic with continuity correction ``(|b - c| - 1)^2 / (b + c)`` (1 dof) otherwise.
    Returns ``{"b", "c", "statistic", "p_value", "test"}``.
    """
    a, b_ = np.asarray(correct_a, bool).ravel(), np.asarray(correct_b, bool).ravel()
    if a.shape != b_.shape:
        raise ValueError("correct_a and correct_b must have the same length (the same images)")
    return _mcnemar_counts(int((a & ~b_).sum()), int((~a & b_).sum()), exact=exact)


def _mcnemar_counts(b: int, c: int, *, exact: bool | None = None) -> dict:
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "statistic": 0.0, "p_value": 1.0, "test": "none (no discordant images)"}
    if exact is None:
        exact = n < 25
    if exact:
        p = sps.binomtest(b, n, 0.5).pvalue
        return {"b": b, "c": c, "statistic": float(b), "p_value": float(min(1.0, p)), "test": "exact binomial"}
    stat = (abs(b - c) - 1) ** 2 / n
    return {"b": b, "c": c, "statistic": float(stat), "p_value": float(sps.chi2.sf(stat, 1)),
            "test": "chi-squared (continuity-corrected)"}


def paired_test(y_true, preds_a: Sequence, preds_b: Sequence, *, exact: bool | None = None) -> dict:
    """McNemar's test of A vs B pooled over seeds. ``preds_a[s]``, ``preds_b[s]`` are the cluster
    labels of seed s on the same images; ``y_true`` is one label array or one per seed.

    Under H0 each seed's discordant count ``b_s`` is Binomial(b_s + c_s, 1/2), independently, so the
    pooled ``sum_s b_s`` is Binomial(sum_s (b_s + c_s), 1/2): the pooled counts are a valid McNemar
    test. Also returns ``acc_a``, ``acc_b`` (mean over seeds) and ``n_seeds``.
    """
    if len(preds_a) != len(preds_b) or not len(preds_a):
        raise ValueError("need the same, non-zero number of seeds for both methods")
    ys = y_true if isinstance(y_true, (list, tuple)) else [y_true] * len(preds_a)
    b = c = 0
    acc_a, acc_b = [], []
    for y, pa, pb in zip(ys, preds_a, preds_b):
        ra, rb = matched_correct(y, pa), matched_correct(y, pb)
        b += int((ra & ~rb).sum())
        c += int((~ra & rb).sum())
        acc_a.append(ra.mean())
        acc_b.append(rb.mean())
    out = _mcnemar_counts(b, c, exact=exact)
    return {**out, "acc_a": float(np.mean(acc_a)), "acc_b": float(np.mean(acc_b)), "n_seeds": len(preds_a)}


def pairwise_pvalues(y_true, preds: dict, *, exact: bool | None = None):
    """Symmetric table of :func:`paired_test` p-values for every pair of methods (supplement
    Table 3 layout); ``preds`` maps a method name to its per-seed label arrays. Returns a pandas
    DataFrame with NaN on the diagonal."""
    import pandas as pd

    names = list(preds)
    table = pd.DataFrame(np.nan, index=names, columns=names)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            p = paired_test(y_true, preds[a], preds[b], exact=exact)["p_value"]
            table.loc[a, b] = table.loc[b, a] = p
    return table


def paired_t(scores_a, scores_b) -> dict:
    """Paired t-test over seeds of a metric (scipy ``ttest_rel``); NaN p-value with < 2 seeds or
    identical differences."""
    a, b = np.asarray(scores_a, float), np.asarray(scores_b, float)
    if a.shape != b.shape:
        raise ValueError("scores_a and scores_b must be paired (same seeds)")
    if a.size < 2 or np.allclose(a - b, (a - b)[0]):
        return {"statistic": float("nan"), "p_value": float("nan"), "mean_diff": float(np.mean(a - b))}
    res = sps.ttest_rel(a, b)
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue), "mean_diff": float(np.mean(a - b))}


def pvalue_report(rows: Sequence[dict], reference: str, *, profile: str):
    """Markdown and table of :func:`pairwise_pvalues` for the methods of ``rows`` (supplement
    Table 3 layout), then ``reference`` against each other method: pooled McNemar
    (:func:`paired_test`) beside the paired t-test over seeds on ACC (:func:`paired_t`).
    ``rows`` are :func:`mixlab.workbook.experiments.run` rows (``name``, ``seed``, ``acc``, ``run_dir``
    whose :func:`mixlab.rundir.clusters` has labels); returns ``(markdown, DataFrame)``."""
    labels, preds, acc = {}, {}, {}
    for r in sorted(rows, key=lambda r: int(r["seed"])):
        z = rundir.clusters(r["run_dir"])
        labels.setdefault(r["name"], []).append(z["labels"])
        preds.setdefault(r["name"], []).append(z["cluster"])
        acc.setdefault(r["name"], []).append(float(r["acc"]))
    if reference not in preds:
        raise ValueError(f"reference {reference!r} has no runs; known: {', '.join(preds)}")
    y = labels[reference]
    table = pairwise_pvalues(y, preds)
    lines = ["| vs | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
    lines += [f"| {a} | " + " | ".join("—" if a == b else f"{table.loc[a, b]:.2g}" for b in table.columns) + " |"
              for a in table.index]
    tests = []
    for other in (n for n in preds if n != reference):
        mc, tt = paired_test(y, preds[reference], preds[other]), paired_t(acc[reference], acc[other])
        tests.append(f"{reference} vs {other}: McNemar b={mc['b']} c={mc['c']} p={mc['p_value']:.3g} ({mc['test']}); "
                     f"paired t on ACC: mean diff {100 * tt['mean_diff']:+.1f} pt, p={tt['p_value']:.3g}")
    seeds = sorted({int(r["seed"]) for r in rows})
    md = (f"McNemar p-values (pooled over seeds {seeds}, profile {profile})\n\n" + "\n".join(lines)
          + "\n\n" + "\n".join(f"- {t}" for t in tests) + "\n")
    return md, table

"""Verdicts on the papers' claims: is arm A better than arm B, judged over training seeds?

A claim compares one metric (ACC by default) of two arms trained on the same images with the
same seeds. The unit of the test is the **seed**: seed s gives the paired difference
d_s = m_A(s) - m_B(s), the effect is mean(d) ± std(d) over seeds, and the **paired t-test**
(t = mean(d) / (std(d) / sqrt(n)), n - 1 degrees of freedom, two-sided) decides at ``ALPHA``:

- ``held``: p < α and the difference has the claimed sign;
- ``reversed``: p < α and the opposite sign;
- ``undecided``: p ≥ α, or fewer than 2 seeds (none at all for an arm not recorded yet, in a
  notebook drawn with ``MIXLAB_DRAW_ONLY=1`` from a pass still in progress).

When every seed gives the same non-zero difference (a discrete metric such as the number of
clusters used), std(d) = 0 and t is ±∞: p = 0, the limit of the t-test. No difference at all is
p = 1.

A claim of *equality* (``direction="equal"``, e.g. MiCE App. E: SGD on μ matches Eq. 13) is an
equivalence test (two one-sided t-tests, TOST, margin ``margin``): ``held`` when the
(1 - 2α) confidence interval of mean(d) lies inside (-margin, margin), ``reversed`` when the
two-sided t-test rejects d = 0 and |mean(d)| ≥ margin, else ``undecided``.

The exact Wilcoxon signed-rank p-value is shown beside it; it never decides (with 3 seeds its
smallest two-sided p is 0.25). Per-image tests (McNemar, :mod:`mixlab.workbook.stats`) condition on the
trained models and do not decide either when seeds vary.

Each notebook writes its claims with :func:`write` (``results_dir/<experiment>/claims.json``);
the pipeline gathers them into ``claims.md`` with :func:`write_table`.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

from mixlab.utils import io, paths
from mixlab.utils.provenance import provenance
from mixlab.workbook import report
from mixlab.workbook.stats import paired_t

ALPHA = 0.05
DIRECTIONS = ("greater", "less", "equal")
VERDICTS = ("held", "reversed", "undecided")


@dataclass
class Claim:
    """What a paper asserts: ``a`` is ``direction`` than ``b`` on ``metric`` (``source`` cites it)."""

    claim: str                 # short statement, e.g. "MiCE > MoCo + spherical k-means"
    source: str                # e.g. "MiCE Tab. 1"
    a: str                     # run name of arm A
    b: str                     # run name of arm B
    direction: str = "greater"
    metric: str = "acc"
    margin: float = 0.01       # equivalence margin for direction="equal" (1 ACC point)

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction={self.direction!r} is not valid; choose one of: {', '.join(DIRECTIONS)}")
        if self.margin <= 0:
            raise ValueError(f"margin={self.margin} must be > 0")


@dataclass
class Verdict:
    """A claim judged on paired per-seed values (fractions, like every mixlab metric)."""

    claim: Claim
    seeds: list[int]
    a_values: list[float]
    b_values: list[float]
    effect_mean: float         # mean over seeds of A - B
    effect_std: float          # sample std (ddof 1) over seeds of A - B; NaN with one seed
    t: float
    p_t: float                 # paired t-test, two-sided: decides
    p_wilcoxon: float          # exact Wilcoxon signed-rank, two-sided: shown only
    verdict: str
    alpha: float = ALPHA

    def to_dict(self) -> dict:
        return {**asdict(self), "claim": asdict(self.claim)}


def _wilcoxon(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p (scipy picks the exact distribution for small n, no ties)."""
    if np.all(d == 0):
        return float("nan")
    return float(sps.wilcoxon(d).pvalue)


def _equivalence(d: np.ndarray, margin: float, alpha: float, p_two_sided: float) -> str:
    """TOST: held if the (1 - 2 alpha) CI of mean(d) is inside (-margin, margin)."""
    n, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    half = sps.t.ppf(1 - alpha, n - 1) * sd / math.sqrt(n)
    if -margin < mean - half and mean + half < margin:
        return "held"
    if p_two_sided < alpha and abs(mean) >= margin:
        return "reversed"
    return "undecided"


def minimum_detectable_effect(n_seeds: int, spread: float, *, alpha: float = ALPHA, power: float = 0.8) -> float:
    """The smallest true mean difference the paired t-test over ``n_seeds`` detects with
    probability ``power`` at ``alpha`` (two-sided), when the per-seed differences have standard
    deviation ``spread``: MDE = d* · spread, d* the standardized effect solving the noncentral-t
    power equation (statsmodels ``TTestPower``). NaN with fewer than 2 seeds; 0 with no spread."""
    from statsmodels.stats.power import TTestPower

    if n_seeds < 2 or not math.isfinite(spread):
        return float("nan")
    if spread == 0:
        return 0.0
    d = TTestPower().solve_power(effect_size=None, nobs=n_seeds, alpha=alpha, power=power, alternative="two-sided")
    return float(d) * spread


def seeds_for(effect: float, spread: float, choices: Sequence[int] = (3, 5), *, alpha: float = ALPHA,
              power: float = 0.8) -> int | None:
    """Seeds a claim needs, by a rule fixed before its runs: the fewest of ``choices`` whose
    :func:`minimum_detectable_effect` at the assumed paired ``spread`` is at most the paper's
    ``effect`` (same units); None when even the most affordable cannot resolve it (run it once, as
    an illustration, and say so)."""
    for n in sorted(choices):
        if minimum_detectable_effect(n, spread, alpha=alpha, power=power) <= abs(effect):
            return n
    return None


def judge(claim: Claim, a_values: Sequence[float], b_values: Sequence[float], *,
          seeds: Sequence[int] | None = None, alpha: float = ALPHA) -> Verdict:
    """Effect, paired t-test over seeds and the verdict of ``claim`` (see the module docstring)."""
    a, b = np.asarray(a_values, float), np.asarray(b_values, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"{claim.claim}: arms need one value per seed, paired; got {a.size} and {b.size}")
    if not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
        raise ValueError(f"{claim.claim}: a metric value is NaN or infinite; check the runs of {claim.a}/{claim.b}")
    seeds = list(range(a.size)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != a.size:
        raise ValueError(f"{claim.claim}: {len(seeds)} seeds for {a.size} paired values")
    d = a - b
    if d.size == 0:  # an arm not recorded yet (draw-only): nothing to judge
        return Verdict(claim=claim, seeds=[], a_values=[], b_values=[], effect_mean=float("nan"),
                       effect_std=float("nan"), t=float("nan"), p_t=float("nan"), p_wilcoxon=float("nan"),
                       verdict="undecided", alpha=alpha)
    if d.size >= 2 and np.all(d == d[0]):  # no seed-to-seed variation: the t-test's limit
        t, p = (math.copysign(math.inf, d[0]), 0.0) if d[0] else (0.0, 1.0)
    else:
        test = paired_t(a, b)
        t, p = test["statistic"], test["p_value"]
    if not math.isfinite(p):
        verdict = "undecided"
    elif claim.direction == "equal":
        verdict = _equivalence(d, claim.margin, alpha, p)
    elif p >= alpha:
        verdict = "undecided"
    else:
        verdict = "held" if (d.mean() > 0) == (claim.direction == "greater") else "reversed"
    return Verdict(claim=claim, seeds=seeds, a_values=a.tolist(), b_values=b.tolist(),
                   effect_mean=float(d.mean()), effect_std=float(d.std(ddof=1)) if d.size > 1 else float("nan"),
                   t=t, p_t=p, p_wilcoxon=_wilcoxon(d), verdict=verdict, alpha=alpha)


def judge_rows(claim: Claim, rows: Sequence[dict], *, alpha: float = ALPHA) -> Verdict:
    """:func:`judge` on the rows of :func:`mixlab.workbook.experiments.run` (``name``, ``seed``, metrics),
    paired by seed over the seeds both arms ran. An arm with no run is an error, except in a notebook
    drawn with ``MIXLAB_DRAW_ONLY=1`` (its runs may not be recorded yet): the claim is undecided on 0 seeds."""
    by = {name: {int(r["seed"]): float(r[claim.metric]) for r in rows if r["name"] == name} for name in (claim.a, claim.b)}
    for name, values in by.items():
        if not values and os.environ.get("MIXLAB_DRAW_ONLY") != "1":
            raise ValueError(f"claim {claim.claim!r}: no runs named {name!r}; known: {sorted({r['name'] for r in rows})}")
    seeds = sorted(set(by[claim.a]) & set(by[claim.b]))
    return judge(claim, [by[claim.a][s] for s in seeds], [by[claim.b][s] for s in seeds], seeds=seeds, alpha=alpha)


def versus_reference(rows: Sequence[dict], reference: str, paper: dict[str, float | None], *, source: str,
                     metric: str = "acc", tie: float = 1.0, alpha: float = ALPHA) -> dict[str, Verdict]:
    """Each ablation row against the ``reference`` row, with the claim the paper's numbers imply.

    The rule, fixed before any run: with g = paper[row] - paper[reference] (paper values in
    percentage points, metrics as fractions), g <= -tie
    claims "row < reference", g >= +tie claims "row > reference", |g| < tie claims "row = reference"
    (TOST with margin ``tie`` points). Rows the paper does not report (value None) are not judged.
    """
    if reference not in paper or paper[reference] is None:
        raise ValueError(f"reference row {reference!r} needs a paper value; got {paper.get(reference)!r}")
    verdicts = {}
    for name, value in paper.items():
        if name == reference or value is None:
            continue
        gap = value - paper[reference]
        direction = "less" if gap <= -tie else "greater" if gap >= tie else "equal"
        sign = {"less": "<", "greater": ">", "equal": "="}[direction]
        claim = Claim(f"{name} {sign} {reference}", source, a=name, b=reference, direction=direction,
                      metric=metric, margin=tie / 100)
        verdicts[name] = judge_rows(claim, rows, alpha=alpha)
    return verdicts


def reference_column(names: Sequence[str], verdicts: dict[str, Verdict], reference: str) -> list[str]:
    """Table column for :func:`versus_reference`: "reference", "<verdict> (A - B)" or "–" (not judged)."""
    def cell(name):
        if name == reference:
            return "reference"
        v = verdicts.get(name)
        return "–" if v is None else f"{v.verdict} ({_num(v.effect_mean, v.claim.metric)})"
    return [cell(n) for n in names]


def write(results_dir: str | Path, experiment: str, verdicts: Sequence[Verdict], *, profile: str) -> Path:
    """Write a notebook's verdicts to ``results_dir/experiment/claims.json`` (with provenance)."""
    path = paths.resolve(results_dir) / experiment / "claims.json"
    io.write_json(path, {"experiment": experiment, "profile": profile, "provenance": provenance(profile=profile),
                         "claims": [v.to_dict() for v in verdicts]})
    return path


def collect(results_dir: str | Path) -> list[dict]:
    """Every claim under ``results_dir/*/claims.json``, each with its experiment and commit."""
    out = []
    for path in sorted(paths.resolve(results_dir).glob("*/claims.json")):
        data = json.loads(path.read_text())
        commit = data.get("provenance", {}).get("commit", "unknown")
        out += [{**c, "experiment": data["experiment"], "commit": commit} for c in data["claims"]]
    return out


FRACTIONS = ("nmi", "ari", "ami")  # and every metric ending in "acc": shown in percentage points


def _num(x: float, metric: str) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{100 * x:+.1f}" if metric.endswith("acc") or metric in FRACTIONS else f"{x:+.2f}"


def _p(x: float, spread: float | None = None) -> str:
    """A p-value cell; the t-test's p = 0 limit for a difference without spread over seeds
    (every seed the same, see the module docstring) says so rather than print a bare 0."""
    if x is None or not math.isfinite(x):
        return "–"
    return "0 (no spread)" if x == 0 and spread == 0 else f"{x:.3g}"


def format_table(records: Sequence[dict | Verdict]) -> str:
    """Markdown: one row per claim (effect mean ± std over seeds, in percentage points for ACC-like
    metrics, NMI, ARI, AMI; as it is otherwise); ``records`` are
    :func:`collect` output or a notebook's own :class:`Verdict` objects."""
    records = [r.to_dict() if isinstance(r, Verdict) else r for r in records]

    def row(r: dict) -> list:
        c = r["claim"]
        effect = f"{_num(r['effect_mean'], c['metric'])} ± {_num(r['effect_std'], c['metric']).lstrip('+')}"
        mde = minimum_detectable_effect(len(r["seeds"]), r["effect_std"], alpha=r.get("alpha", ALPHA))
        return [c["source"], c["claim"], c["metric"].upper(), effect, len(r["seeds"]),
                _num(mde, c["metric"]).lstrip("+"), _p(r["p_t"], r["effect_std"]), _p(r["p_wilcoxon"]),
                f"**{r['verdict']}**", r.get("experiment", "")]

    return report.table(["source", "claim", "metric", "A − B (mean ± std)", "seeds", "MDE (80 % power)", "paired t p",
                         "Wilcoxon p", "verdict", "experiment"], map(row, records))


def write_table(results_dir: str | Path, profile: str) -> Path | None:
    """Gather every notebook's claims into ``results_dir/claims.md`` (None when there are none)."""
    records = collect(results_dir)
    if not records:
        return None
    alpha = {r.get("alpha", ALPHA) for r in records}
    head = (f"Unit of test: the training seed. The two-sided paired t-test over seeds decides at"
            f" α = {', '.join(map(str, sorted(alpha)))}; equality claims use TOST with their margin;"
            " the exact Wilcoxon signed-rank p is shown only. MDE is the smallest true difference that test"
            " detects with 80 % power at the claim's seeds and measured spread of A − B: an undecided claim"
            " whose paper effect is below it needs more seeds, not another reading. Effects are A − B: percentage points for ACC,"
            " NMI, ARI, AMI and the probes, the metric's own unit otherwise.\n\n")
    counts = {v: sum(r["verdict"] == v for r in records) for v in VERDICTS}
    tail = "\n" + ", ".join(f"{n} {v}" for v, n in counts.items()) + f" of {len(records)} claims.\n"
    return report.write(paths.resolve(results_dir) / "claims.md", head + format_table(records) + tail,
                        writer="`python -m mixlab reproduce`", profile=profile)

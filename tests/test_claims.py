"""Claims over seeds: a known difference is held, its opposite reversed, noise undecided; the
pipeline gathers the notebooks' claims into one table."""
import json

import numpy as np
import pytest

from mixlab.workbook import claims

CLAIM = claims.Claim("A > B", "Paper Tab. 1", a="A", b="B")


def test_known_difference_is_held_and_its_opposite_reversed():
    b = np.array([0.50, 0.55, 0.48, 0.52, 0.51])
    a = b + np.array([0.050, 0.045, 0.055, 0.052, 0.048])
    held = claims.judge(CLAIM, a, b)
    assert held.verdict == "held"
    assert held.effect_mean == pytest.approx(0.05)
    assert held.p_t < 0.001
    assert claims.judge(CLAIM, b, a).verdict == "reversed"
    less = claims.Claim("A < B", "Paper Tab. 3", a="A", b="B", direction="less")
    assert claims.judge(less, b, a).verdict == "held"
    assert claims.judge(less, a, b).verdict == "reversed"


def test_noise_is_undecided():
    rng = np.random.default_rng(0)
    base = rng.normal(0.6, 0.05, 3)
    a, b = base + rng.normal(0, 0.02, 3), base + rng.normal(0, 0.02, 3)
    v = claims.judge(CLAIM, a, b)
    assert v.p_t >= claims.ALPHA and v.verdict == "undecided"


def test_one_seed_is_undecided_and_a_constant_difference_decides():
    assert claims.judge(CLAIM, [0.9], [0.1]).verdict == "undecided"
    assert claims.judge(CLAIM, [10, 10, 10], [1, 1, 1]).verdict == "held"  # e.g. clusters used, every seed
    assert claims.judge(CLAIM, [1, 1, 1], [10, 10, 10]).verdict == "reversed"
    assert claims.judge(CLAIM, [5, 5], [5, 5]).verdict == "undecided"
    used = claims.Claim("A uses more clusters", "Paper §8", a="A", b="B", metric="clusters_used")
    assert "| CLUSTERS_USED | +9.00 ± 0.00 | 3 | 0.00 | 0 (no spread) |" in claims.format_table(
        [claims.judge(used, [10] * 3, [1] * 3)])
    assert "| 0 (no spread) |" not in claims.format_table([claims.judge(used, [10, 11, 9], [1, 1, 1])])


def test_equality_claim_by_equivalence():
    same = claims.Claim("A = B", "MiCE App. E", a="A", b="B", direction="equal", margin=0.01)
    b = np.array([0.60, 0.62, 0.58, 0.61])
    assert claims.judge(same, b + np.array([0.001, -0.001, 0.0005, -0.0005]), b).verdict == "held"
    assert claims.judge(same, b + np.array([0.05, 0.06, 0.055, 0.052]), b).verdict == "reversed"
    assert claims.judge(same, b + np.array([0.03, -0.02, 0.01, -0.025]), b).verdict == "undecided"


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="paired"):
        claims.judge(CLAIM, [0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        claims.judge(CLAIM, [0.1, float("nan")], [0.1, 0.2])
    with pytest.raises(ValueError, match="direction"):
        claims.Claim("x", "y", a="A", b="B", direction="bigger")
    with pytest.raises(ValueError, match="no runs named 'B'"):
        claims.judge_rows(CLAIM, [{"name": "A", "seed": 0, "acc": 0.5}])


def test_rows_are_paired_by_seed():
    rows = [{"name": "A", "seed": s, "acc": 0.7 + 0.01 * s} for s in (2, 0, 1)]
    rows += [{"name": "B", "seed": s, "acc": 0.5 + 0.011 * s} for s in (0, 1, 2, 3)]
    v = claims.judge_rows(CLAIM, rows)
    assert v.seeds == [0, 1, 2]
    assert v.a_values == [0.7, 0.71, 0.72] and v.b_values == pytest.approx([0.5, 0.511, 0.522])
    assert v.verdict == "held"


def test_collect_and_table(tmp_path):
    rng = np.random.default_rng(1)
    b = rng.normal(0.5, 0.03, 3)
    claims.write(tmp_path, "exp1", [claims.judge(CLAIM, b + 0.1 + rng.normal(0, 0.005, 3), b, seeds=[0, 1, 2])],
                 profile="smoke")
    claims.write(tmp_path, "exp2", [claims.judge(claims.Claim("C > D", "Paper Tab. 2", a="C", b="D"),
                                                 [0.5, 0.6, 0.55], [0.52, 0.58, 0.56])], profile="smoke")
    records = claims.collect(tmp_path)
    assert [(r["experiment"], r["verdict"]) for r in records] == [("exp1", "held"), ("exp2", "undecided")]
    path = claims.write_table(tmp_path, "smoke")
    text = path.read_text()
    assert "| Paper Tab. 1 | A > B | ACC | +10." in text and "**held**" in text and "**undecided**" in text
    assert "1 held, 0 reversed, 1 undecided of 2 claims." in text
    assert json.loads((tmp_path / "exp1" / "claims.json").read_text())["profile"] == "smoke"
    assert claims.write_table(tmp_path / "empty", "smoke") is None


def test_ablations_are_judged_against_the_reference_by_the_paper_gap():
    rng = np.random.default_rng(1)
    base = 0.60 + rng.normal(0, 0.005, 4)
    arms = {"ref": base, "worse": base - 0.05 + rng.normal(0, 0.002, 4), "same": base + rng.normal(0, 0.001, 4),
            "new": base + 0.05}
    rows = [{"name": n, "seed": s, "acc": float(v[s])} for n, v in arms.items() for s in range(4)]
    paper = {"ref": 42.2, "worse": 40.0, "same": 41.5, "new": None}
    verdicts = claims.versus_reference(rows, "ref", paper, source="Paper Tab. 3")
    assert set(verdicts) == {"worse", "same"}                       # a row the paper lacks is not judged
    assert verdicts["worse"].claim.direction == "less" and verdicts["worse"].verdict == "held"
    assert verdicts["same"].claim.direction == "equal" and verdicts["same"].verdict == "held"
    flipped = claims.versus_reference(rows, "ref", {**paper, "worse": 45.0}, source="Paper Tab. 3")
    assert flipped["worse"].claim.direction == "greater" and flipped["worse"].verdict == "reversed"
    column = claims.reference_column(["ref", "worse", "new"], verdicts, "ref")
    assert verdicts["worse"].effect_mean == pytest.approx(-0.05, abs=0.003)
    assert column == ["reference", f"held ({100 * verdicts['worse'].effect_mean:+.1f})", "–"]
    with pytest.raises(ValueError, match="reference row 'ref' needs a paper value"):
        claims.versus_reference(rows, "ref", {**paper, "ref": None}, source="Paper Tab. 3")


def test_minimum_detectable_effect_is_where_the_paired_t_test_has_80_percent_power():
    """At MDE the noncentral t (noncentrality MDE / (spread / sqrt(n))) exceeds the two-sided
    critical value with probability 0.8; fewer seeds or more spread make it larger."""
    from scipy import stats as sps

    from mixlab.workbook.claims import minimum_detectable_effect

    for n, spread in ((3, 0.05), (5, 0.05), (10, 0.02)):
        mde = minimum_detectable_effect(n, spread)
        crit = sps.t.ppf(0.975, n - 1)
        nc = mde / (spread / n ** 0.5)
        power = sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc)
        assert abs(power - 0.8) < 1e-3
    assert minimum_detectable_effect(3, 0.05) > minimum_detectable_effect(5, 0.05) > minimum_detectable_effect(10, 0.05)
    assert minimum_detectable_effect(5, 0.08) > minimum_detectable_effect(5, 0.04)
    assert minimum_detectable_effect(1, 0.05) != minimum_detectable_effect(1, 0.05)  # NaN: one seed


def test_seeds_for_takes_the_fewest_seeds_whose_mde_resolves_the_paper_effect():
    from mixlab.workbook.claims import minimum_detectable_effect, seeds_for

    assert seeds_for(0.252, 0.05) == 3                     # MiCE A5: 25.2 points
    assert seeds_for(0.086, 0.05) == 5                     # A3 + A4: 8.6 points
    assert seeds_for(0.015, 0.05) is None                  # A3 alone: an illustration
    n = seeds_for(0.086, 0.05, (3, 5, 10))
    assert minimum_detectable_effect(n, 0.05) <= 0.086 < minimum_detectable_effect(3, 0.05)

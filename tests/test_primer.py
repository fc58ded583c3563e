"""The teaching notebook's helpers (mixlab/workbook/primer.py): certificates that fail when they should and
report slack, EM traces, the Banerjee error curve, and the KL-to-uniform decomposition."""
import json
import math

import numpy as np
import pytest
import torch

from mixlab.mixture import banerjee_kappa, gmm, vmf_mean_resultant_length
from mixlab.workbook import primer


def test_certificates_pass_fail_and_report_slack(tmp_path, capsys):
    cert = primer.Certificates(tmp_path / "checks.json")
    assert cert.equal("small gap", torch.tensor([1e-13, -2e-13]), 1e-12) == pytest.approx(2e-13)
    assert cert.at_most("holds", np.array([0.0, 1.0]), np.array([0.5, 1.25])) == pytest.approx(0.25)
    assert "slack = +2.50e-01" in capsys.readouterr().out
    with pytest.raises(primer.CertificateFailed, match="slack = -1.00e-01"):
        cert.at_most("violated", 1.1, 1.0)
    with pytest.raises(primer.CertificateFailed):
        cert.equal("too big", 1e-3, 1e-6)
    with pytest.raises(primer.CertificateFailed):
        cert.equal("nan never passes", float("nan"), 1.0)
    rows = json.loads((tmp_path / "checks.json").read_text())
    assert [rows[n]["passed"] for n in ("small gap", "holds", "violated", "too big")] == [True, True, False, False]
    table = cert.table()
    assert list(table["check"])[:2] == ["small gap", "holds"] and set(table["kind"]) == {"equal", "at_most"}


def _data():
    rng = np.random.default_rng(0)
    return torch.as_tensor(np.concatenate([rng.normal(-2, 0.6, 80), rng.normal(2, 0.8, 120)]))


def test_em_trace_records_the_chain_of_inequalities():
    tr = primer.em_trace(_data(), 2, 15, seed=0)
    assert len(tr.params) == 16 and len(tr.loglik) == 16 and len(tr.elbo_next) == 15
    np.testing.assert_allclose(tr.elbo_here, tr.loglik[:-1], atol=1e-10)  # the E-step closes the gap
    assert np.all(tr.elbo_next >= tr.elbo_here - 1e-12)  # M-step
    assert np.all(tr.kl_next >= -1e-12) and tr.kl_next[0] > 1e-6  # KL opens after the M-step
    _, history = gmm.gmm_fit(_data(), 2, iters=15, seed=0, reg=0.0)
    np.testing.assert_allclose(tr.loglik, history, atol=1e-12)


def test_generalised_em_step_is_monotone_only_up_to_two():
    x = _data()
    assert np.all(np.diff(primer.em_trace(x, 2, 20, seed=1, mean_step=1.5).loglik) >= -1e-12)
    assert np.diff(primer.em_trace(x, 2, 20, seed=1, mean_step=3.0).loglik).min() < 0


def test_stopping_iteration():
    assert primer.stopping_iteration([0.0, 1.0, 1.5, 1.5 + 1e-9, 2.0], 1e-6) == 3
    assert primer.stopping_iteration([0.0, 1.0, 2.0], 1e-6) == 2


def test_banerjee_error_at_d16_exceeds_one_percent():
    R = np.linspace(0.6, 0.75, 31)
    err = primer.banerjee_relative_error(16, R)
    assert 0.0105 < err.max() < 0.0106 and abs(R[err.argmax()] - 0.67) < 0.01
    root = primer.exact_kappa(16, 0.5)
    assert float(vmf_mean_resultant_length(16, root)) == pytest.approx(0.5, abs=1e-12)
    with pytest.raises(ValueError, match="must lie in"):
        primer.exact_kappa(16, 1.0)


def test_banerjee_kappa_numpy_and_torch():
    R = np.array([0.3, 0.9])
    expected = (R * 8 - R**3) / (1 - R**2)
    np.testing.assert_allclose(banerjee_kappa(R, 8), expected)
    assert torch.allclose(banerjee_kappa(torch.as_tensor(R), 8), torch.as_tensor(expected))


def test_ellipse_axes_and_angle():
    w, h, ang = primer.ellipse(np.diag([4.0, 1.0]), n_std=1.0)
    assert (w, h) == pytest.approx((4.0, 2.0)) and abs(math.sin(math.radians(ang))) < 1e-12
    w, h, ang = primer.ellipse(np.array([[1.0, 0.0], [0.0, 9.0]]), n_std=2.0)
    assert (w, h) == pytest.approx((12.0, 4.0)) and abs(abs(ang) - 90.0) < 1e-9


def test_match_components_undoes_label_switching():
    ref = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    perm = primer.match_components(ref, ref[[2, 0, 1]] + 0.01)
    np.testing.assert_array_equal(perm, [1, 2, 0])


def test_kl_to_uniform_decomposition():
    sharp = torch.log(torch.tensor([[0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.01, 0.01, 0.98]], dtype=torch.float64))
    dec = primer.kl_to_uniform_decomposition(sharp)
    assert dec["marginal_kl"] == pytest.approx(0.0, abs=1e-12)  # balanced marginal: all of the KL is I(x; k)
    assert dec["mean_kl"] == pytest.approx(dec["mutual_info"], abs=1e-12) and dec["mutual_info"] > 0.9
    same = torch.log(torch.tensor([[0.7, 0.2, 0.1]] * 4, dtype=torch.float64))
    dec = primer.kl_to_uniform_decomposition(same)  # q independent of x: no information, all imbalance
    assert dec["mutual_info"] == pytest.approx(0.0, abs=1e-12)
    assert dec["mean_kl"] == pytest.approx(dec["marginal_kl"], abs=1e-12) and dec["mean_kl"] > 0.1


def test_relaxed_instance_bound_recovers_the_linear_expectation():
    log_q = torch.log(torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64))
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    noise = -torch.log(-torch.log(torch.rand(40000, 1, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)))
    mean, se = primer.relaxed_instance_bound(log_q, lambda c: c @ w, 0.01, noise)
    kl = float((log_q.exp() * (log_q + math.log(3))).sum())
    expected = float(log_q.exp()[0] @ w) - kl  # lambda -> 0: E_q[f(e_k)] - KL(q || U) for a linear f
    assert mean.shape == (1,) and abs(float(mean) - expected) < 4 * float(se) + 1e-3

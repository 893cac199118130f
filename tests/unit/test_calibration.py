import json

import numpy as np
import pytest
from scipy import special, stats

from mhgan_dist.core import calibrators


def shifted_discriminator(seed, n=4000, shift=3.0):
    """Real x ~ N(1, 1), generated x ~ N(-1, 1): the exact log-odds are 2x; D adds a shift."""
    rng = np.random.default_rng(seed)
    real_x, fake_x = rng.normal(1.0, 1.0, n), rng.normal(-1.0, 1.0, n)
    return 2.0 * real_x + shift, 2.0 * fake_x + shift


def test_json_round_trip_gives_identical_predictions(tmp_path):
    real, fake = shifted_discriminator(0)
    fitted = calibrators.make_calibrator("isotonic").fit(real, fake)
    path = tmp_path / "isotonic.json"
    path.write_text(json.dumps(fitted.to_json()))
    loaded = calibrators.calibrator_from_json(json.loads(path.read_text()))
    probe = np.linspace(-30, 30, 10_001)
    assert np.array_equal(loaded.predict_logit(probe), fitted.predict_logit(probe))
    identity = calibrators.calibrator_from_json(calibrators.make_calibrator("none").to_json())
    assert np.array_equal(identity.predict_logit(probe), probe)


def _exact_isotonic_values(real, fake):
    """The exact least-squares non-decreasing fit at each distinct score, as Fractions (plain O(n^2) PAV)."""
    from fractions import Fraction

    xs = sorted(set(np.concatenate([real, fake]).tolist()))
    blocks = [[Fraction(int((real == x).sum())), int((real == x).sum() + (fake == x).sum()), 1] for x in xs]
    merged = True
    while merged:  # merge any adjacent violating pair until none is left
        merged = False
        for i in range(len(blocks) - 1):
            (r1, n1, c1), (r2, n2, c2) = blocks[i], blocks[i + 1]
            if r1 / n1 >= r2 / n2:
                blocks[i:i + 2] = [[r1 + r2, n1 + n2, c1 + c2]]
                merged = True
                break
    return xs, [r / n for r, n, c in blocks for _ in range(c)]


@pytest.mark.parametrize("seed", range(6))
def test_the_isotonic_fit_is_the_exact_pav_solution_and_agrees_with_scikit_learn(seed):
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(seed)
    real, fake = rng.normal(0.5, 1.0, 150), rng.normal(-0.5, 1.0, 170)
    if seed % 2:  # ties within and across the classes
        real, fake = np.round(real, 1), np.round(fake, 1)
    xs, exact = _exact_isotonic_values(real, fake)
    tx, ty = calibrators.isotonic_thresholds(real, fake)
    fitted = np.interp(xs, tx, ty)
    # Each fitted value is its block's count ratio, rounded once.
    assert np.array_equal(fitted, np.array([float(v) for v in exact]))
    # Only the ends and the points where the fit changes are kept.
    assert tx[0] == xs[0] and tx[-1] == xs[-1] and np.all(np.diff(tx) > 0)
    interior = (ty[1:-1] != ty[:-2]) | (ty[1:-1] != ty[2:])
    assert interior.all()
    # scikit-learn's fit of the same data, to its summation's rounding.
    x, y = np.concatenate([real, fake]), np.r_[np.ones(real.size), np.zeros(fake.size)]
    reference = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(x, y)
    probe = np.linspace(x.min() - 1, x.max() + 1, 5001)
    np.testing.assert_allclose(np.interp(probe, tx, ty), reference.predict(probe), rtol=0, atol=1e-15)


def test_scores_within_the_tie_resolution_of_a_run_join_it():
    from sklearn.isotonic import IsotonicRegression

    tie = calibrators._TIE_RESOLUTION
    real = np.array([1.2 * tie, 3.0])
    fake = np.array([0.0, 0.6 * tie, 2.0])
    tx, ty = calibrators.isotonic_thresholds(real, fake)
    # 0 and 0.6 r are one run (fit 0; 0.6 r would be kept as a point of its own); 1.2 r starts the next.
    np.testing.assert_array_equal(tx, [0.0, 1.2 * tie, 2.0, 3.0])
    np.testing.assert_array_equal(ty, [0.0, 0.5, 0.5, 1.0])
    x, y = np.concatenate([real, fake]), np.r_[np.ones(real.size), np.zeros(fake.size)]
    reference = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True).fit(x, y)
    np.testing.assert_array_equal(reference.X_thresholds_, tx)


def test_calibrated_log_odds_are_finite_and_monotone():
    real, fake = shifted_discriminator(1, n=500)
    fitted = calibrators.IsotonicCalibrator().fit(real, fake)
    probe = np.linspace(-1e6, 1e6, 1001)
    p = fitted.predict_proba(probe)
    n = real.size + fake.size
    assert p.min() >= 1 / (n + 1) and p.max() <= n / (n + 1)
    out = fitted.predict_logit(probe)
    assert np.isfinite(out).all() and (np.diff(out) >= 0).all()


def test_cross_fitted_diagnostics_improve_on_a_shifted_discriminator():
    real, fake = shifted_discriminator(2)
    diag = calibrators.cross_fitted_diagnostics(real, fake, "isotonic", seed=0)
    before, after = diag["before"], diag["after"]
    # A shift of +3 makes D far too sure of "real": Z is hugely negative before.
    assert before["dawid_z"] < -20
    # Calibrated Z is standard normal; 3.35 is the paper's Bonferroni bound.
    assert abs(after["dawid_z"]) < 3.35
    assert after["ece"] < before["ece"] / 3
    assert after["brier"] < before["brier"] and after["log_loss"] < before["log_loss"]
    assert before["n"] == after["n"] == real.size + fake.size


def test_metrics_on_known_inputs():
    y = np.array([1, 0, 1, 0], dtype=float)
    m = calibrators.calibration_metrics(np.full(4, 0.5), y)
    assert m.dawid_z == 0.0 and m.ece == 0.0 and m.brier == 0.25
    assert m.log_loss == pytest.approx(np.log(2))
    m = calibrators.calibration_metrics(np.array([0.9, 0.9, 0.9, 0.9]), y)
    assert m.dawid_z == pytest.approx((2 - 3.6) / np.sqrt(4 * 0.09))
    assert m.ece == pytest.approx(0.4)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: calibrators.IsotonicCalibrator().fit(np.array([np.nan]), np.zeros(3)), "real_logits"),
        (lambda: calibrators.IsotonicCalibrator().fit(np.zeros(3), np.array([])), "fake_logits"),
        (lambda: calibrators.make_calibrator("linear"), "calibration must be one of"),
        (lambda: calibrators.calibrator_from_json({"kind": "isotonic", "thresholds_x": [0, 1], "thresholds_y": [0.5], "num_fit": 3}), "isotonic calibration JSON"),
        (lambda: calibrators.calibrator_from_json({"kind": "pickle"}), "kind"),
        (lambda: calibrators.calibration_metrics(np.zeros(3), np.zeros(2)), "equal length"),
        (lambda: calibrators.IsotonicCalibrator().predict_logit(np.zeros(2)), "not fitted"),
    ],
)
def test_invalid_input_raises(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_capped_isotonic_caps_only_the_odds_no_generated_draw_reached(tmp_path):
    real, fake = shifted_discriminator(3, n=2000)
    plain = calibrators.make_calibrator("isotonic").fit(real, fake)
    capped = calibrators.make_calibrator("isotonic-capped").fit(real, fake)
    n = real.size + fake.size
    # The uncapped map ends in an all-real block above every generated score: odds of about n.
    top = np.array([real.max()])
    assert plain.predict_proba(top)[0] == pytest.approx(n / (n + 1))
    cap = plain.predict_proba(fake).max()
    assert cap < n / (n + 1) and capped.cap_probability == cap
    probe = np.linspace(real.min() - 5, real.max() + 5, 20_001)
    below = plain.predict_proba(probe) <= cap
    assert below.any() and (~below).any()
    np.testing.assert_array_equal(capped.predict_proba(probe)[below], plain.predict_proba(probe)[below])
    assert (capped.predict_proba(probe)[~below] == cap).all()
    assert (np.diff(capped.predict_logit(probe)) >= 0).all()
    # No calibrated log-odds lies above what the generated fitting scores get.
    assert capped.predict_logit(real).max() == pytest.approx(capped.predict_logit(fake).max())
    path = tmp_path / "capped.json"
    path.write_text(json.dumps(capped.to_json()))
    loaded = calibrators.calibrator_from_json(json.loads(path.read_text()))
    assert isinstance(loaded, calibrators.CappedIsotonicCalibrator)
    np.testing.assert_array_equal(loaded.predict_logit(probe), capped.predict_logit(probe))
    with pytest.raises(ValueError, match="cap_probability"):
        calibrators.calibrator_from_json({**capped.to_json(), "cap_probability": 1.0})


# ------------------------------------------------------------ platt and beta


def fisher_bound(features, true_logits, z):
    """Half-widths z * sqrt(g' I^-1 g) of a fitted logistic map's log-odds at feature rows g.

    features: [n, d] with the intercept's column of ones included; I = sum p(1-p) f f' is the
    Fisher information of the n fitting scores at the true parameters, so I^-1 is the fit's
    asymptotic covariance. By Cauchy-Schwarz, |g' delta| <= sqrt(g' I^-1 g) sqrt(delta' I delta),
    and delta' I delta is chi-square with d degrees of freedom: z = sqrt(chi2_d.isf(alpha)) bounds
    every grid point at once with probability 1 - alpha.
    """
    p = calibrators.sigmoid(true_logits)
    information = (features * (p * (1 - p))[:, None]).T @ features
    covariance = np.linalg.inv(information)
    return lambda rows: z * np.sqrt(np.einsum("ij,jk,ik->i", rows, covariance, rows))


ALPHA = 1e-4  # per test


def test_platt_undoes_a_mis_scaled_shifted_logit():
    # Real x ~ N(1, 1), generated x ~ N(-1, 1): the exact log-odds are 2x. D reports 5x + 3 (too
    # confident, shifted), so the exact map from D's logit r is (r - 3) * 2/5: slope 0.4, intercept -1.2.
    rng = np.random.default_rng(7)
    n = 20_000
    real_x, fake_x = rng.normal(1.0, 1.0, n), rng.normal(-1.0, 1.0, n)
    real, fake = 5 * real_x + 3, 5 * fake_x + 3
    fitted = calibrators.make_calibrator("platt").fit(real, fake)
    raw = np.concatenate([real, fake])
    z = np.sqrt(stats.chi2.isf(ALPHA, 2))
    bound = fisher_bound(np.stack([raw, np.ones_like(raw)], axis=1), 0.4 * raw - 1.2, z)
    half_widths = bound(np.eye(2))  # the slope's and the intercept's own bounds
    assert abs(fitted.slope - 0.4) < half_widths[0], (fitted.slope, half_widths)
    assert abs(fitted.intercept - -1.2) < half_widths[1], (fitted.intercept, half_widths)
    grid = np.linspace(-15.0, 21.0, 361)  # D's logits of x in [-3.6, 3.6]
    error = np.abs(fitted.predict_logit(grid) - (0.4 * grid - 1.2))
    assert (error < bound(np.stack([grid, np.ones_like(grid)], axis=1))).all()
    # The bound is tight enough to matter: D's raw logits miss it all over the grid (they cross the
    # exact map only near r = -2).
    assert (np.abs(grid - (0.4 * grid - 1.2)) > bound(np.stack([grid, np.ones_like(grid)], axis=1))).mean() > 0.95
    # Cross-fitted diagnostics: raw D is badly calibrated, Platt's out-of-fold fit is calibrated.
    diag = calibrators.cross_fitted_diagnostics(real, fake, "platt", seed=0)
    assert diag["before"]["dawid_z"] < -20 and abs(diag["after"]["dawid_z"]) < 3.35


def beta_scores(rng, n, real=(4.0, 2.0), fake=(2.0, 5.0)):
    """D's probabilities s ~ Beta(a1, b1) on real and Beta(a0, b0) on generated samples, as raw logits."""
    s1, s0 = rng.beta(*real, n), rng.beta(*fake, n)
    return np.log(s1) - np.log1p(-s1), np.log(s0) - np.log1p(-s0)


def exact_beta_posterior(raw, real=(4.0, 2.0), fake=(2.0, 5.0)):
    """log Beta(s; a1, b1) - log Beta(s; a0, b0) at s = sigmoid(raw), equal class sizes."""
    s = calibrators.sigmoid(raw)
    return stats.beta.logpdf(s, *real) - stats.beta.logpdf(s, *fake)


def test_beta_fits_the_exact_posterior_of_beta_distributed_scores():
    # The exact posterior log-odds is (a1 - a0) log s + (b0 - b1)(-log(1 - s)) + log B(a0,b0) - log B(a1,b1):
    # beta calibration's family with a = 2, b = 3, c = log(B(2,5)/B(4,2)).
    rng = np.random.default_rng(8)
    n = 50_000  # enough for the bound below to tell the posterior's curvature from a line
    real, fake = beta_scores(rng, n)
    fitted = calibrators.make_calibrator("beta").fit(real, fake)
    raw = np.concatenate([real, fake])
    features = np.column_stack([calibrators.BetaCalibrator.features(raw), np.ones(raw.size)])
    bound = fisher_bound(features, exact_beta_posterior(raw), np.sqrt(stats.chi2.isf(ALPHA, 3)))
    grid = np.linspace(-4.5, 4.5, 181)  # D's probability from 0.011 to 0.989: where the scores lie
    rows = np.column_stack([calibrators.BetaCalibrator.features(grid), np.ones(grid.size)])
    error = np.abs(fitted.predict_logit(grid) - exact_beta_posterior(grid))
    assert (error < bound(rows)).all(), (error / bound(rows)).max()
    c = special.betaln(2, 5) - special.betaln(4, 2)
    assert np.abs(np.array([fitted.a, fitted.b, fitted.c]) - [2.0, 3.0, c]).max() < bound(np.eye(3)).max()
    # The bound is tight enough to matter: a Platt fit (a line in the logit) misses the curved posterior.
    platt = calibrators.make_calibrator("platt").fit(real, fake)
    assert (np.abs(platt.predict_logit(grid) - exact_beta_posterior(grid)) > bound(rows)).any()


def test_beta_keeps_the_map_monotone_when_the_exact_posterior_is_not():
    # Real s ~ Beta(2, 2), generated s ~ Beta(1, 1): the posterior log-odds log 6 s (1 - s) rises then
    # falls (b = -1 < 0). The constrained fit puts b at its bound 0 and stays non-decreasing.
    real, fake = beta_scores(np.random.default_rng(9), 5000, real=(2.0, 2.0), fake=(1.0, 1.0))
    fitted = calibrators.make_calibrator("beta").fit(real, fake)
    assert fitted.b == 0.0 and fitted.a > 0
    assert (np.diff(fitted.predict_logit(np.linspace(-20, 20, 4001))) >= 0).all()


@pytest.mark.parametrize("name", ["platt", "beta"])
def test_degenerate_fits_stay_finite(name):
    x = np.random.default_rng(10).normal(size=500)
    # No information at all: the same scores for both classes give constant odds (the prior's).
    flat = calibrators.make_calibrator(name).fit(x, x.copy())
    assert np.ptp(flat.predict_logit(np.linspace(-50, 50, 101))) < 1e-9
    assert flat.predict_proba(np.zeros(1))[0] == pytest.approx(0.5, abs=1e-9)
    # Perfectly separated scores: the maximum-likelihood slope would be infinite; Platt's targets keep
    # it finite, and the map still orders the classes.
    separated = calibrators.make_calibrator(name).fit(x + 20.0, x - 20.0)
    params = separated.to_json()
    assert all(np.isfinite(v) for k, v in params.items() if k != "kind")
    assert separated.predict_proba(x + 20.0).min() > 0.99 and separated.predict_proba(x - 20.0).max() < 0.01
    # Unequal class sizes: the constant map gives the fitting share of real scores.
    prior = calibrators.make_calibrator(name).fit(x[:100], x)
    assert prior.predict_proba(np.zeros(1))[0] == pytest.approx(101 / 102 * 100 / 600 + 1 / 502 * 500 / 600,
                                                                rel=0.05)


WHOLE_LINE = np.concatenate([-np.logspace(308.25, -300, 400), [0.0], np.logspace(-300, 308.25, 400)])


@pytest.mark.parametrize("name", sorted(calibrators.CALIBRATORS))
def test_every_calibrator_is_finite_and_monotone_over_the_whole_real_line(name):
    real, fake = shifted_discriminator(11, n=2000)
    # D's logits a third of the exact ones: Platt's and beta's slopes come out near 3, so slope * x
    # overflows for |x| above 6e307 and must be clamped to the largest finite float.
    fitted = calibrators.make_calibrator(name).fit(real / 3.0, fake / 3.0)
    assert np.isfinite(WHOLE_LINE).all() and WHOLE_LINE.max() > 1.7e308
    with np.errstate(divide="raise", over="raise", invalid="raise"):  # no log(0), no overflow: log space
        out = fitted.predict_logit(WHOLE_LINE)
        p = fitted.predict_proba(WHOLE_LINE)
    assert np.isfinite(out).all() and (np.diff(out) >= 0).all()
    assert ((p >= 0) & (p <= 1)).all() and (np.diff(p) >= 0).all()
    if name in ("platt", "beta"):
        assert out[-1] == np.finfo(np.float64).max and out[0] == -np.finfo(np.float64).max  # clamped, finite
        assert (np.diff(fitted.predict_logit(np.linspace(-10, 10, 201))) > 0).all()  # strictly, where D's scores lie


@pytest.mark.parametrize("name", ["isotonic", "isotonic-capped", "platt", "beta", "none"])
def test_cross_fitted_probabilities_come_from_the_other_fold_only(name):
    real, fake = shifted_discriminator(12, n=600)
    probabilities, labels, fold = calibrators.out_of_fold_probabilities(real, fake, name, seed=4)
    scores = np.concatenate([real, fake])
    assert np.array_equal(labels, np.r_[np.ones(600), np.zeros(600)])
    for held_out in (0, 1):
        assert ((fold == held_out) & (labels == 1)).sum() == 300 and ((fold == held_out) & (labels == 0)).sum() == 300
        train = fold != held_out
        other = calibrators.make_calibrator(name).fit(scores[train & (labels == 1)], scores[train & (labels == 0)])
        np.testing.assert_array_equal(probabilities[fold == held_out], other.predict_proba(scores[fold == held_out]))
    if name != "none":  # an in-sample fit gives other probabilities: these are not in-sample
        everything = calibrators.make_calibrator(name).fit(real, fake)
        assert not np.allclose(probabilities, everything.predict_proba(scores))
    diag = calibrators.cross_fitted_diagnostics(real, fake, name, seed=4)
    assert diag["after"] == calibrators.calibration_metrics(probabilities, labels).to_json()
    assert diag["before"] == calibrators.calibration_metrics(calibrators.sigmoid(scores), labels).to_json()


@pytest.mark.parametrize("name", sorted(calibrators.CALIBRATORS))
def test_every_calibrator_round_trips_through_a_json_file(name, tmp_path):
    real, fake = shifted_discriminator(13, n=1000)
    fitted = calibrators.make_calibrator(name).fit(real, fake)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(fitted.to_json(), allow_nan=False))  # strict JSON: numbers only
    loaded = calibrators.calibrator_from_json(json.loads(path.read_text()))
    assert type(loaded) is type(fitted) and loaded.to_json() == fitted.to_json()
    np.testing.assert_array_equal(loaded.predict_logit(WHOLE_LINE), fitted.predict_logit(WHOLE_LINE))


PLATT = {"kind": "platt", "num_fit": 40, "slope": 0.4, "intercept": -1.2}
BETA = {"kind": "beta", "num_fit": 40, "a": 2.0, "b": 3.0, "c": -0.4}


@pytest.mark.parametrize(
    "obj, message",
    [
        ({**PLATT, "slope": -0.1}, "finite number >= 0 as 'slope'"),
        ({**PLATT, "slope": float("nan")}, "'slope'"),
        ({**PLATT, "slope": float("inf")}, "'slope'"),
        ({**PLATT, "slope": True}, "'slope'"),
        ({**PLATT, "intercept": "0"}, "'intercept'"),
        ({k: v for k, v in PLATT.items() if k != "intercept"}, "'intercept'"),
        ({**PLATT, "num_fit": 1.5}, "num_fit"),
        ({**BETA, "a": -1.0}, "finite number >= 0 as 'a'"),
        ({**BETA, "b": None}, "'b'"),
        ({**BETA, "c": [1.0]}, "'c'"),
        ({k: v for k, v in BETA.items() if k != "num_fit"}, "num_fit"),
        ({"kind": ["platt"]}, "kind in"),
        ({"kind": "linear"}, "kind in"),
        (["platt", 0.4], "kind in"),
    ],
)
def test_malformed_calibration_json_is_refused_with_one_sentence(obj, message):
    with pytest.raises(ValueError, match=message) as info:
        calibrators.calibrator_from_json(obj)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["{not json", json.dumps({**PLATT, "slope": -1.0}), '{"kind": "beta", "a": NaN}',
                                  "[]"])
def test_a_malformed_calibration_file_is_refused_naming_the_file(text, tmp_path):
    from mhgan_dist.errors import InputError
    from mhgan_dist.pipeline.calibration import load_calibration_file

    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError, match=r"calibration file .*bad\.json is not a usable calibration") as info:
        load_calibration_file(str(path))
    assert "\n" not in str(info.value)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(BETA))
    assert load_calibration_file(str(good)) == BETA


def test_the_configured_calibration_names_are_the_calibrators():
    from mhgan_dist.run.config import CALIBRATION_METHODS

    assert sorted(CALIBRATION_METHODS) == sorted(calibrators.CALIBRATORS)

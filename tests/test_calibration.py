import json

import numpy as np
import pytest

from mhgan_dist import calibration


def shifted_discriminator(seed, n=4000, shift=3.0):
    """Real x ~ N(1, 1), generated x ~ N(-1, 1): the exact log-odds are 2x; D adds a shift."""
    rng = np.random.default_rng(seed)
    real_x, fake_x = rng.normal(1.0, 1.0, n), rng.normal(-1.0, 1.0, n)
    return 2.0 * real_x + shift, 2.0 * fake_x + shift


def test_json_round_trip_gives_identical_predictions(tmp_path):
    real, fake = shifted_discriminator(0)
    fitted = calibration.make_calibrator("isotonic").fit(real, fake)
    path = tmp_path / "isotonic.json"
    path.write_text(json.dumps(fitted.to_json()))
    loaded = calibration.calibrator_from_json(json.loads(path.read_text()))
    probe = np.linspace(-30, 30, 10_001)
    assert np.array_equal(loaded.predict_logit(probe), fitted.predict_logit(probe))
    identity = calibration.calibrator_from_json(calibration.make_calibrator("none").to_json())
    assert np.array_equal(identity.predict_logit(probe), probe)


def test_calibrated_log_odds_are_finite_and_monotone():
    real, fake = shifted_discriminator(1, n=500)
    fitted = calibration.IsotonicCalibrator().fit(real, fake)
    probe = np.linspace(-1e6, 1e6, 1001)
    p = fitted.predict_proba(probe)
    n = real.size + fake.size
    assert p.min() >= 1 / (n + 1) and p.max() <= n / (n + 1)
    out = fitted.predict_logit(probe)
    assert np.isfinite(out).all() and (np.diff(out) >= 0).all()


def test_cross_fitted_diagnostics_improve_on_a_shifted_discriminator():
    real, fake = shifted_discriminator(2)
    diag = calibration.cross_fitted_diagnostics(real, fake, "isotonic", seed=0)
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
    m = calibration.calibration_metrics(np.full(4, 0.5), y)
    assert m.dawid_z == 0.0 and m.ece == 0.0 and m.brier == 0.25
    assert m.log_loss == pytest.approx(np.log(2))
    m = calibration.calibration_metrics(np.array([0.9, 0.9, 0.9, 0.9]), y)
    assert m.dawid_z == pytest.approx((2 - 3.6) / np.sqrt(4 * 0.09))
    assert m.ece == pytest.approx(0.4)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: calibration.IsotonicCalibrator().fit(np.array([np.nan]), np.zeros(3)), "real_logits"),
        (lambda: calibration.IsotonicCalibrator().fit(np.zeros(3), np.array([])), "fake_logits"),
        (lambda: calibration.make_calibrator("linear"), "calibration must be one of"),
        (lambda: calibration.calibrator_from_json({"kind": "isotonic", "thresholds_x": [0, 1], "thresholds_y": [0.5], "num_fit": 3}), "isotonic calibration JSON"),
        (lambda: calibration.calibrator_from_json({"kind": "pickle"}), "kind"),
        (lambda: calibration.calibration_metrics(np.zeros(3), np.zeros(2)), "equal length"),
        (lambda: calibration.IsotonicCalibrator().predict_logit(np.zeros(2)), "not fitted"),
    ],
)
def test_invalid_input_raises(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_capped_isotonic_caps_only_the_odds_no_generated_draw_reached(tmp_path):
    real, fake = shifted_discriminator(3, n=2000)
    plain = calibration.make_calibrator("isotonic").fit(real, fake)
    capped = calibration.make_calibrator("isotonic-capped").fit(real, fake)
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
    loaded = calibration.calibrator_from_json(json.loads(path.read_text()))
    assert isinstance(loaded, calibration.CappedIsotonicCalibrator)
    np.testing.assert_array_equal(loaded.predict_logit(probe), capped.predict_logit(probe))
    with pytest.raises(ValueError, match="cap_probability"):
        calibration.calibrator_from_json({**capped.to_json(), "cap_probability": 1.0})

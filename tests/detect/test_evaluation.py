"""Detection-rate evaluation: rates, combined score and AUC against independent computations,
the harness's detection run kind and the ``noise-signature`` run-config detector."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advimage.detect import NoiseSignatureDetector, SignatureDetector, joint_thresholds
from advimage.detect.metrics import combined_score, detection_rates, roc_aucs
from advimage.detect.registry import build_detector, list_detectors
from advimage.eval.detection import DetectionAttack, DetectionJob, run_detection
from advimage.eval.detection_store import read_detection
from advimage.eval.store import DB_NAME, ResultStore
from advimage.studies.detection import run_from_config


def _synthetic(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    calib = {"c1": torch.rand(200, generator=g), "c2t": torch.randint(0, 20, (200,), generator=g)}
    clean = {"c1": torch.rand(100, generator=g), "c2t": torch.randint(0, 20, (100,), generator=g)}
    adv = {"c1": torch.rand(50, generator=g) + 0.5,
           "c2t": torch.randint(10, 40, (50,), generator=g)}
    return calib, clean, adv


def test_detection_rates_match_direct_counts():
    calib, clean, adv = _synthetic()
    rows = detection_rates(calib, clean, adv, (0.05, 0.1))
    assert len(rows) == 2 * 3
    for r in rows:
        if r["criterion"] == "combined":
            want, _, _ = joint_thresholds(calib, r["fpr_target"])
            assert r["threshold"] == want
            thr = want
        else:
            # the largest score with at most floor(fpr n) calibration scores strictly above
            s = np.sort(calib[r["criterion"]].double().numpy())
            m = int(np.floor(r["fpr_target"] * len(s) + 1e-9))
            assert r["threshold"] == pytest.approx(s[len(s) - 1 - m])
            thr = {r["criterion"]: r["threshold"]}
        flag_adv = np.zeros(50, bool)
        flag_clean = np.zeros(100, bool)
        flag_cal = np.zeros(200, bool)
        for k, t in thr.items():
            flag_adv |= adv[k].double().numpy() > t
            flag_clean |= clean[k].double().numpy() > t
            flag_cal |= calib[k].double().numpy() > t
        assert r["detection_rate"] == pytest.approx(flag_adv.mean())
        assert r["fpr_test"] == pytest.approx(flag_clean.mean())
        assert r["fpr_calibration"] == pytest.approx(flag_cal.mean())
        assert r["fpr_calibration"] <= r["fpr_target"] + 1e-12
        assert r["n_adv"] == 50


def test_combined_score_is_max_of_empirical_cdfs():
    calib, clean, _ = _synthetic(1)
    got = combined_score(calib, clean).numpy()
    want = np.max([[np.mean(calib[k].double().numpy() < v) for v in clean[k].double().numpy()]
                   for k in calib], axis=0)
    np.testing.assert_allclose(got, want)


def test_auc_equals_mann_whitney():
    calib, clean, adv = _synthetic(2)
    aucs = roc_aucs(calib, clean, adv)
    for k in ("c1", "c2t"):
        c, a = clean[k].double().numpy(), adv[k].double().numpy()
        u = (a[:, None] > c[None, :]).mean() + 0.5 * (a[:, None] == c[None, :]).mean()
        assert aucs[k] == pytest.approx(u)
    assert set(aucs) == {"c1", "c2t", "combined"}
    assert aucs["c1"] > 0.7  # shifted adversarial scores are separable
    empty = {k: v[:0] for k, v in adv.items()}
    assert np.isnan(roc_aucs(calib, clean, empty)["c1"])


def test_runner_resumes_without_recrafting(tmp_path, digits_model, digits_test, fast_config):
    from advimage.attacks import PGD

    x, y = digits_test
    det = SignatureDetector(NoiseSignatureDetector(digits_model, fast_config, "c1,c2t", seed=0))
    calls = []

    def factory(calib):
        calls.append(sorted(calib))
        return PGD(eps=0.1, steps=10)

    def job(make):
        return DetectionJob(digits_model, det, (x[:120], y[:120]), (x[200:240], y[200:240]),
                            {"pgd": DetectionAttack(make, "pgd", 0.1, {"steps": 10})},
                            batch_size=20)

    r1 = run_detection(job(factory), tmp_path)
    assert calls == [["c1", "c2t"]]
    res = r1["attacks"]["pgd"]
    assert res["n_success"] > 10  # PGD at 0.1 fools the digits CNN on most images
    assert {r["criterion"] for r in res["rates"]} == {"c1", "c2t", "combined"}

    def fail(calib):
        raise AssertionError("resumed run must not craft again")

    r2 = run_detection(job(fail), tmp_path)
    assert r2["attacks"]["pgd"]["rates"] == res["rates"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["attacks"]["pgd"]["n_success"] == res["n_success"]
    # the stored clean scores are the detector's own on the clean test images
    with ResultStore(tmp_path / DB_NAME) as store:
        view = read_detection(store)
    assert torch.equal(det.engine.score(x[200:240])["c2t"].double(), view.test.scores["c2t"])


def test_run_from_config_and_errors(tmp_path):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(
        "name: t\nmodel: bundled\ndata: {name: digits}\n"
        "calibration: {split: train, limit: 60}\ntest: {split: test, limit: 20}\n"
        "detector: {criteria: c1, set: {sigma: 0.05, n_noise: 2}}\nfprs: [0.1]\n"
        "attacks:\n  - {label: g, kind: hu, eps: [0.1], options: {steps: 5}}\n"
        "  - {label: a, kind: adaptive, eps: [0.1, 0.2], options: {steps: 3}}\n"
    )
    r = run_from_config(cfg, tmp_path / "out", only=["g", "a@0.1"])
    assert sorted(r["attacks"]) == ["a@0.1", "g@0.1"]
    assert r["n_calibration"] == 60 and r["criteria"] == ["c1"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nmodel: bundled\nattaks: []\n")
    with pytest.raises(ValueError, match="unknown key 'attaks'"):
        run_from_config(bad, tmp_path / "o2")
    with pytest.raises(ValueError, match="not found"):
        run_from_config(tmp_path / "missing.yaml", tmp_path / "o3")


def test_registered_detector_scores(digits_model, digits_test, fast_config):
    assert "noise-signature" in list_detectors()
    x = digits_test[0][:16]
    opts = {"n_noise": 4, "c2t_cap": 40, "seed": 3}
    score = build_detector("noise-signature", digits_model, {**opts, "criterion": "c1"})
    det = NoiseSignatureDetector(digits_model, "cifar10", "c1", seed=3)
    det.config = det.config.replace(n_noise=4, c2t_cap=40)
    assert torch.allclose(score(x), det.score(x)["c1"].double())
    thr = {"c1": 0.01, "c2t": 5.0}
    comb = build_detector("noise-signature", digits_model,
                          {**opts, "criterion": "combined", "thresholds": thr})(x)
    det2 = NoiseSignatureDetector(digits_model, "cifar10", "c1,c2t", seed=3)
    det2.config = det2.config.replace(n_noise=4, c2t_cap=40)
    det2.thresholds = thr
    s = det2.score(x)
    assert torch.equal(comb > 0, det2.flags(s)["combined"])  # positive exactly when flagged
    with pytest.raises(ValueError, match="unknown option 'sigmaa'"):
        build_detector("noise-signature", digits_model, {"sigmaa": 1})
    with pytest.raises(ValueError, match="needs options.thresholds"):
        build_detector("noise-signature", digits_model, {"criterion": "combined"})


def test_cli_eval_detection(tmp_path, capsys):
    from advimage.cli import main

    cfg = tmp_path / "d.yaml"
    cfg.write_text(
        "name: t\nmodel: bundled\ndata: {name: digits}\n"
        "calibration: {split: train, limit: 40}\ntest: {split: test, limit: 20}\n"
        "detector: {criteria: c1, set: {sigma: 0.05, n_noise: 2}}\nfprs: [0.1]\n"
        "attacks:\n  - {label: g, kind: pgd, eps: [0.2], options: {steps: 5}}\n"
    )
    assert main(["eval", "detection", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "g@0.2: success" in out and "detected at FPR 0.1:" in out
    assert (tmp_path / "o" / "results.json").is_file()


def test_config_offset_holds_out_evaluation_images(tmp_path):
    from advimage.data import load_dataset

    cfg = tmp_path / "d.yaml"
    cfg.write_text(
        "name: t\nmodel: bundled\ndata: {name: digits}\n"
        "calibration: {split: test, offset: 20, limit: 40}\ntest: {split: test, limit: 20}\n"
        "detector: {criteria: c1, set: {sigma: 0.05, n_noise: 2}}\nfprs: [0.1]\nattacks: []\n"
    )
    r = run_from_config(cfg, tmp_path / "o")
    assert r["n_calibration"] == 40 and r["n_test"] == 20
    ds = load_dataset("digits", "test")
    want_y = ds.balanced(60).tensors()[1][20:]
    with ResultStore(tmp_path / "o" / DB_NAME) as store:
        got = read_detection(store).calibration.y
    assert torch.equal(got, want_y)  # the 40 images after the 20 evaluation images
    cfg.write_text(cfg.read_text().replace("offset: 20", "ofset: 20"))
    with pytest.raises(ValueError, match="calibration.ofset"):
        run_from_config(cfg, tmp_path / "o2")

"""``advimage demo`` as a package on the top floor: the runner, its sections (the cache model of
Orhan 2018 and the noise-signature detector of Hu, Yu et al. 2019) and their order."""

from __future__ import annotations

import pytest
import torch

from advimage.data import load_dataset
from advimage.demo import SECTIONS, DemoContext, run_demo
from advimage.demo.cache_section import cache_section
from advimage.demo.detect_section import detection_section
from advimage.eval.report import HtmlReport
from advimage.models.hub import load_model


@pytest.fixture(scope="module")
def digits_model():
    return load_model("bundled")[0]


def _ctx(model, tmp_path) -> DemoContext:
    return DemoContext(model, load_dataset("digits", "test"), torch.device("cpu"), 0, 0.1,
                       tmp_path, {})


def test_default_sections_run_cache_then_detection() -> None:
    assert list(SECTIONS) == ["cache", "detection"]
    assert SECTIONS["cache"] is cache_section and SECTIONS["detection"] is detection_section


def test_demo_sections_run_in_order(tmp_path) -> None:
    calls: list[str] = []
    sections = {name: (lambda report, ctx, n=name: calls.append(n) or {"n": n})
                for name in ("first", "second")}
    summary = run_demo(tmp_path, steps=2, progress=False, sections=sections)
    assert calls == ["first", "second"]
    assert summary["sections"] == {"first": {"n": "first"}, "second": {"n": "second"}}
    assert (tmp_path / "report.html").is_file() and (tmp_path / "summary.json").is_file()


def test_cache_section_reports_model_cache_and_cache_only(tmp_path, digits_model) -> None:
    ctx = _ctx(digits_model, tmp_path)
    res = cache_section(HtmlReport("t"), ctx)
    rows = {r["classifier"]: r for r in res["rows"]}
    assert list(rows) == ["model", "cache", "cache-only"]
    x, y = ctx.test.balanced(200).tensors()
    with torch.no_grad():
        assert rows["model"]["clean_accuracy"] == pytest.approx(
            float((digits_model(x).argmax(1) == y).float().mean()), abs=1e-4)
    for r in rows.values():  # PGD at eps 0.1 hurts every classifier on these digits
        assert r["pgd_whitebox_accuracy"] < r["clean_accuracy"]
        assert r["pgd_transfer_accuracy"] < r["clean_accuracy"]


def test_detection_section_flags_pgd_not_clean(tmp_path, digits_model) -> None:
    out = detection_section(HtmlReport("t"), _ctx(digits_model, tmp_path))
    clean, adv = out["rows"]
    assert clean["n"] > 100 and clean["flagged"] < 0.3  # near the 10% target
    assert adv["flagged"] > 0.8  # PGD at 0.1 on the digits CNN is easy to spot
    assert out["auc"]["combined"] > 0.9

"""Transfer attacks crafted on an ensemble of surrogates named in the run config (issue 18 item 5):
``surrogate:`` takes a path or a list of paths (+ ``surrogate_weights``), the run loads each
model once, crafts on the logit ensemble, records the list in ``config.json`` (a rerun with
another list is refused) and names it in the attack's label."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from harness_helpers import tiny_config
from torch import nn

from advimage.attacks.registry import create_attack
from advimage.attacks.transfer import SurrogateEnsemble
from advimage.cli import main
from advimage.data import load_dataset
from advimage.errors import ConfigMismatchError
from advimage.eval.config import parse_config
from advimage.eval.config_attacks import model_short_name
from advimage.eval.runner import run_evaluation
from advimage.eval.store import ResultStore
from advimage.models import create_model, save_checkpoint
from advimage.models.hub import load_model

EPS = 0.2
PGD = {"steps": 3, "random_start": False}  # no draws: the seed (it depends on the label) is moot


@pytest.fixture
def other(tmp_path: Path) -> str:
    """A second digits classifier (random weights) saved as a checkpoint file."""
    torch.manual_seed(1)
    path = save_checkpoint(create_model("small-cnn", num_classes=10), tmp_path / "other-1a2b3c4d")
    return str(path)


def _attack(surrogate: object, **extra: object) -> dict:
    return {"name": "pgd", "eps": [EPS], "options": PGD, "surrogate": surrogate, **extra}


def test_a_list_parses_to_an_ensemble_and_a_single_path_is_unchanged(other: str) -> None:
    cfg = parse_config(tiny_config(attacks=[
        _attack("bundled"), _attack(["bundled", other], label="pair"),
        _attack(["bundled", other], surrogate_weights=[3, 1]), _attack([other], label="one")]))
    single, pair, weighted, one = cfg.attacks
    assert single.to_dict() == {"name": "pgd", "eps": EPS, "norm": "linf", "options": PGD,
                                "label": "pgd-transfer", "kind": "transfer",
                                "surrogate": "bundled"}  # as config.json stored it before
    assert single.surrogate_key == "bundled" and one.to_dict()["surrogate"] == other
    assert pair.surrogates == ("bundled", other) and pair.kind == "transfer"
    assert pair.to_dict()["surrogate"] == ["bundled", other]
    assert weighted.label == "pgd-transfer(bundled+other)"  # file stem, hash dropped
    assert weighted.to_dict()["surrogate_weights"] == [3.0, 1.0]
    assert len({a.surrogate_key for a in cfg.attacks}) == 4
    assert parse_config(cfg.to_dict()).to_dict() == cfg.to_dict()  # config.json round trip
    assert model_short_name("/m/resnet20-12fca82f.th") == "resnet20"
    assert model_short_name("hf:org/vit-b.16") == "vit-b.16"


@pytest.mark.parametrize("bad", [
    {"surrogate": []}, {"surrogate": ["bundled", "missing.pt"]}, {"surrogate": ["bundled", 3]},
    {"surrogate": ["bundled", "bundled"]}, {"surrogate": "bundled", "surrogate_weights": [1]},
    {"surrogate": ["bundled", "OTHER"], "surrogate_weights": [1]},
    {"surrogate": ["bundled", "OTHER"], "surrogate_weights": [1, -1]},
    {"surrogate": ["bundled", "OTHER"], "surrogate_weights": [0, 0]},
    {"surrogate": ["bundled", "OTHER"], "surrogate_weights": ["a", 1]},
    {"surrogate_weights": [1, 1]}])
def test_bad_surrogate_lists_are_one_line_errors(bad: dict, other: str) -> None:
    bad = {k: [other if v == "OTHER" else v for v in x] if isinstance(x, list) else x
           for k, x in bad.items()}
    with pytest.raises(ValueError, match=r"attacks\[0\]\.surrogate") as err:
        parse_config(tiny_config(attacks=[{"name": "pgd", **bad}]))
    assert "\n" not in str(err.value)


def test_cli_refuses_an_empty_list_a_missing_file_and_other_classes(
        tmp_path: Path, write_config, capsys, other: str) -> None:
    torch.manual_seed(2)
    three = save_checkpoint(create_model("small-cnn", num_classes=3), tmp_path / "three")
    for surrogate, says in (([], "non-empty list"), (["bundled", "gone.pt"], "not found"),
                            (["bundled", str(three)], "gives 3 classes, the model 10")):
        cfg = write_config(tiny_config(attacks=[_attack(surrogate)]))
        assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and "\n" not in err
        assert not (tmp_path / "run").exists()  # refused before anything was written


class MeanLogits(nn.Module):
    """The equal-weight logit ensemble written out (the test's own reference)."""

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.a(x) + self.b(x)) / 2


def test_a_run_crafts_on_the_ensemble_and_refuses_another_list(tmp_path: Path,
                                                                other: str) -> None:
    attacks = [_attack("bundled", label="single"),
               _attack(["bundled", other], surrogate_weights=[1, 0], label="first-only"),
               _attack(["bundled", other], label="mean")]
    cfg = parse_config(tiny_config(attacks=attacks, checks={"enabled": False}))
    run = run_evaluation(cfg, tmp_path / "run", progress=False)
    with ResultStore(run / "results.sqlite") as store:
        rows = {(r["attack"].split("@")[0], r["sample"]): r for r in store.samples()}
    n = cfg.data.limit
    cols = ("pred_adv", "distance")
    for i in range(n):  # weights 1, 0: exactly the first surrogate alone
        assert [rows["first-only", i][c] for c in cols] == [rows["single", i][c] for c in cols]
    # the equal-weight ensemble, reproduced batch by batch with the test's own logit mean
    target, source = load_model("bundled")[0], MeanLogits(load_model("bundled")[0],
                                                          load_model(other)[0])
    x_all, y_all = load_dataset("digits", "test").balanced(n).tensors()
    pgd = create_attack("pgd", eps=EPS, seed=0, **PGD)
    for start in range(0, n, cfg.data.batch_size):
        x, y = x_all[start:start + 10], y_all[start:start + 10]
        with torch.no_grad():
            pred = target(pgd(source, x, y)).argmax(1).tolist()
        assert pred == [rows["mean", start + i]["pred_adv"] for i in range(len(y))]
    assert [rows["mean", i]["pred_adv"] for i in range(n)] != \
        [rows["single", i]["pred_adv"] for i in range(n)]  # the second model mattered
    swapped = parse_config(tiny_config(attacks=[*attacks[:2], _attack([other, "bundled"],
                                                                      label="mean")],
                                       checks={"enabled": False}))
    with pytest.raises(ConfigMismatchError):
        run_evaluation(swapped, run, resume=True, progress=False)


def test_ensemble_logits_are_the_weighted_mean() -> None:
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    x = torch.rand(5, 4)
    with torch.no_grad():
        torch.testing.assert_close(SurrogateEnsemble([a, b], [3, 1])(x), 0.75 * a(x) + 0.25 * b(x))


@pytest.mark.shared
def test_the_ensemble_config_lists_the_shared_resnets(shared_models, cifar10_root,
                                                      monkeypatch) -> None:
    from advimage.eval.config import load_config

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # ../shared is relative to the repository root
    cfg = load_config(repo / "configs" / "transfer-ensemble-to-resnet56.yaml")
    assert Path(cfg.model).name.startswith("resnet56")
    names = {a.label: "+".join(map(model_short_name, a.surrogates)) for a in cfg.attacks}
    assert all(label.endswith(f"({names[label]})") for label in names)
    assert set(names.values()) == {"resnet20", "resnet20+resnet32", "resnet20+resnet32+resnet44"}
    for a in cfg.attacks:
        assert a.kind == "transfer" and create_attack(a.name, eps=a.eps, **a.options).steps == 10


FGSM_EPS = 0.08  # FGSM on the bundled model itself leaves 60% of these 40 digits robust


def _eval_robust(out: Path, *extra: str) -> list[dict]:
    """``advimage eval robust`` with FGSM (no random draws) on 40 digits; its result rows."""
    import json

    argv = ["eval", "robust", "--model", "bundled", "--data", "digits", "--limit", "40",
            "--attacks", "fgsm", "--eps", str(FGSM_EPS), "--out", str(out), "--no-progress",
            *extra]
    assert main(argv) == 0
    return json.loads((out / "robust.json").read_text())["results"]


def test_eval_robust_crafts_on_the_surrogates_of_the_command_line(tmp_path: Path,
                                                                  other: str) -> None:
    mean = _eval_robust(tmp_path / "mean", "--surrogate", f"bundled,{other}")
    first = _eval_robust(tmp_path / "first", "--surrogate", f"bundled,{other}",
                         "--surrogate-weights", "1,0")
    white = _eval_robust(tmp_path / "white")
    assert [r["attack"] for r in mean + first + white] == \
        ["fgsm-transfer(bundled+other)@0.08"] * 2 + ["fgsm@0.08"]
    # weights 1, 0: exactly FGSM crafted on the model itself (the same model here)
    assert first[0]["robust_accuracy"] == white[0]["robust_accuracy"]
    # equal weights: the test's own logit mean as the source, the bundled model as the target
    target = load_model("bundled")[0]
    source = MeanLogits(load_model("bundled")[0], load_model(other)[0])
    x, y = load_dataset("digits", "test").balanced(40).tensors()
    with torch.no_grad():
        robust = target(create_attack("fgsm", eps=FGSM_EPS)(source, x, y)).argmax(1) == y
    assert mean[0]["robust_accuracy"] == pytest.approx(float(robust.double().mean()))
    preds = {}
    for name in ("mean", "white"):
        with ResultStore(tmp_path / name / "results.sqlite") as store:
            preds[name] = [r["pred_adv"] for r in store.samples()]
    assert preds["mean"] != preds["white"]  # the second model mattered


@pytest.mark.parametrize(("argv", "says"), [
    (["--surrogate-weights", "1,1"], "needs --surrogate"),
    (["--surrogate", "bundled,OTHER", "--surrogate-weights", "1,x"], "comma-separated numbers"),
    (["--surrogate", "bundled,OTHER", "--surrogate-weights", "1"], "surrogate_weights"),
    (["--surrogate", "gone.pt"], "not found"),
])
def test_eval_robust_refuses_bad_surrogate_options(tmp_path: Path, capsys, other: str,
                                                   argv: list[str], says: str) -> None:
    argv = [a.replace("OTHER", other) for a in argv]
    code = main(["eval", "robust", "--model", "bundled", "--data", "digits", "--limit", "4",
                 "--attacks", "fgsm", "--eps", str(EPS), "--out", str(tmp_path / "r"),
                 "--no-progress", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and says in err and "\n" not in err, err
    assert not (tmp_path / "r").exists()

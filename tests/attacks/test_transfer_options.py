"""Transfer options of the shared loop (MI, DI, TI) and the surrogate ensemble, checked against
torchattacks' MIFGSM, TIFGSM and DIFGSM and against direct computations."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from advimage.attacks import PGD, create_attack
from advimage.attacks.transfer import DiverseInputs, SurrogateEnsemble, gaussian_kernel, smooth

EPS = 8 / 255
STEPS = 10


@pytest.fixture(scope="module")
def rgb() -> tuple[nn.Module, Tensor, Tensor]:
    """A small untrained RGB CNN (any fixed model will do for arithmetic checks) and 12 images."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 10),
    ).eval()
    x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _ours(model: nn.Module, x: Tensor, y: Tensor, **opts: object) -> Tensor:
    attack = PGD(eps=EPS, steps=STEPS, step_size=EPS / STEPS, random_start=False,
                 early_stop=False, channels_last=False, **opts)  # type: ignore[arg-type]
    return attack(model, x, y)


def _agree(a: Tensor, b: Tensor) -> None:
    """Same pixels but for sign flips of gradients that are zero up to rounding (torchattacks
    differentiates the batch-mean loss, advimage the sum: the scale differs by 1/B)."""
    same = (a - b).abs() <= 1e-6
    assert float(same.float().mean()) >= 0.999, float(same.float().mean())
    assert float((a - b).abs().max()) <= 2 * EPS + 1e-6


@pytest.mark.peers
def test_momentum_matches_torchattacks_mifgsm(rgb) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = rgb
    ref = torchattacks.MIFGSM(model, eps=EPS, alpha=EPS / STEPS, steps=STEPS, decay=1.0)(x, y)
    _agree(_ours(model, x, y, momentum=1.0), ref)
    assert not torch.equal(_ours(model, x, y), _ours(model, x, y, momentum=1.0))


@pytest.mark.peers
def test_ti_with_momentum_matches_torchattacks_tifgsm(rgb) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = rgb
    ref = torchattacks.TIFGSM(model, eps=EPS, alpha=EPS / STEPS, steps=STEPS, decay=1.0,
                              len_kernel=5, nsig=3, diversity_prob=0.0)(x, y)
    _agree(_ours(model, x, y, momentum=1.0, ti_kernel=5, ti_nsig=3.0), ref)


@pytest.mark.peers
@pytest.mark.parametrize("resize", [0.9, 1.1])
def test_diverse_inputs_match_torchattacks_draw_for_draw(resize: float) -> None:
    """Same global seed, same draws: DI's transform equals torchattacks' ``input_diversity``."""
    torchattacks = pytest.importorskip("torchattacks")
    peer = torchattacks.DIFGSM(nn.Identity(), resize_rate=resize, diversity_prob=0.5)
    ours = DiverseInputs(nn.Identity(), 0.5, resize, torch.default_generator)
    x = torch.rand(2, 3, 32, 32)
    changed = 0
    for seed in range(20):
        torch.manual_seed(seed)
        ref = peer.input_diversity(x)
        torch.manual_seed(seed)
        out = ours(x)
        assert out.shape == ref.shape and torch.equal(out, ref), seed
        changed += out.shape != x.shape or not torch.equal(out, x)
    assert 3 <= changed <= 17  # about half the passes transform


def test_gaussian_kernel_and_smoothing_by_hand() -> None:
    k = gaussian_kernel(3, 1.0, torch.float64, torch.device("cpu"))
    e = torch.exp(torch.tensor(-0.5, dtype=torch.float64))
    row = torch.stack([e, torch.ones((), dtype=torch.float64), e])
    assert torch.allclose(k, torch.outer(row, row) / torch.outer(row, row).sum())
    g = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    g[0, 1, 2, 2] = 1.0  # an impulse in channel 1 spreads as the kernel, channel 0 stays 0
    out = smooth(g, 3, 1.0)
    assert torch.allclose(out[0, 1, 1:4, 1:4], k) and torch.all(out[0, 0] == 0)


def test_di_with_early_stop_judges_the_images_themselves(rgb) -> None:
    model, x, y = rgb
    attack = PGD(eps=EPS, steps=STEPS, diversity_prob=1.0, seed=3)
    x_adv = attack(model, x, y)
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    assert bool(fooled.any())
    assert bool(attack.threat.contains(x, x_adv).all())


def test_ensemble_averages_logits_and_attacks_like_one_model(rgb) -> None:
    model, x, y = rgb
    torch.manual_seed(5)
    other = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10)).eval()
    ens = SurrogateEnsemble([model, other], weights=[3.0, 1.0])
    with torch.no_grad():
        assert torch.allclose(ens(x), 0.75 * model(x) + 0.25 * other(x), atol=1e-6)
    twin = SurrogateEnsemble([model, model])
    assert torch.allclose(_ours(twin, x, y, momentum=1.0), _ours(model, x, y, momentum=1.0),
                          atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [{"momentum": -1.0}, {"diversity_prob": 1.5}, {"diversity_resize": 1.0},
     {"diversity_resize": 0.0}, {"ti_kernel": 4}, {"ti_kernel": -3}, {"ti_nsig": 0.0}],
)
def test_bad_transfer_options_raise_one_line(bad: dict) -> None:
    with pytest.raises(ValueError) as err:
        create_attack("pgd", **bad)
    assert "\n" not in str(err.value)


def test_bad_ensembles_raise() -> None:
    with pytest.raises(ValueError):
        SurrogateEnsemble([])
    with pytest.raises(ValueError):
        SurrogateEnsemble([nn.Identity()], weights=[-1.0])
    with pytest.raises(ValueError):
        SurrogateEnsemble([nn.Identity(), nn.Identity()], weights=[1.0])


@pytest.mark.shared
@pytest.mark.parametrize("name", ["transfer-resnet20-to-resnet56",
                                  "transfer-resnet20-to-resnet56-ti3"])
def test_transfer_configs_build_their_attacks(name, shared_models, cifar10_root, monkeypatch):
    """The report's configs parse, craft on resnet20 for resnet56, and every row builds."""
    from pathlib import Path

    from advimage.eval.config import load_config

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # ../shared is relative to the repository root
    cfg = load_config(repo / "configs" / f"{name}.yaml")
    assert Path(cfg.model).name.startswith("resnet56")
    for spec in cfg.attacks:
        attack = create_attack(spec.name, eps=spec.eps, norm=spec.norm, **spec.options)
        assert attack.steps == STEPS and attack.step_size == pytest.approx(EPS / STEPS)
        if spec.surrogates:
            assert [Path(p).name[:8] for p in spec.surrogates] == ["resnet20"]
            assert attack.momentum == (0.0 if spec.label == "ifgsm" else 1.0)

"""The square patterns and random windows of the Square Attack (l2 and l1 proposals).

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020, Sec. 3.2 (L2): each proposal pastes a square of the pattern
``eta`` (two halves of opposite sign, mass concentrated in the middle of each half) scaled to the
mass it takes over; :class:`advimage.attacks.square.Square` places and scales it. The L1 pattern
is the one of Croce & Hein's auto-attack code (``square.py``, MIT licence): rings weighted by
``1 / (k + 1)^4`` instead of ``1 / (k + 1)^2``, normalised in L1.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["eta_grid", "eta_pattern", "placed_eta", "random_sign", "random_windows",
           "rect_pattern", "reference_sign", "reference_window"]

_PATTERN_NORMS = ("l2", "l1")


def eta_pattern(s: int, like: Tensor, transpose: bool, norm: str = "l2") -> Tensor:
    """The square pattern of the paper, (s, s), unit norm in ``norm`` (``"l2"`` or ``"l1"``).

    Two stacked halves of opposite sign; each half weighs pixel (i, j) by
    ``sum_{k >= d} 1 / (k + 1)^q`` (q = 2 for l2, 4 for l1) with ``d`` its Chebyshev distance to
    the half's centre, so the mass concentrates in the middle of each half.
    """
    top = rect_pattern(s // 2, s, like, norm)
    bottom = rect_pattern(s - s // 2, s, like, norm)
    eta = torch.cat([top, -bottom], dim=0)
    eta = eta / _unit(eta, norm)
    return eta.t() if transpose else eta


def rect_pattern(a: int, b: int, like: Tensor, norm: str = "l2") -> Tensor:
    """(a, b) block of concentric rectangles around (a // 2, b // 2), unit norm in ``norm``
    (empty if a=0)."""
    if norm not in _PATTERN_NORMS:
        raise ValueError(f"square pattern: unsupported norm {norm!r}; choose one of: l2, l1")
    if a == 0:
        return torch.zeros(0, b, dtype=like.dtype, device=like.device)
    i = torch.arange(a, device=like.device)[:, None] - a // 2
    j = torch.arange(b, device=like.device)[None, :] - b // 2
    d = torch.maximum(i.abs(), j.abs())  # (a, b) Chebyshev distance
    k = torch.arange(max(a // 2, b // 2) + 1, device=like.device, dtype=like.dtype)  # rings
    weights = 1.0 / (k + 1) ** (2 if norm == "l2" else 4)
    r = ((k >= d[..., None]).to(like.dtype) * weights).sum(-1)
    return r / _unit(r, norm)


def _unit(t: Tensor, norm: str) -> Tensor:
    """The ``norm`` of the whole tensor ``t``, floored away from zero."""
    return (t.norm() if norm == "l2" else t.abs().sum()).clamp_min(1e-12)


def random_sign(shape: tuple[int, ...], like: Tensor, gen: torch.Generator) -> Tensor:
    """Uniform random +-1 of ``shape``, in ``like``'s dtype and device."""
    bits = torch.randint(0, 2, shape, generator=gen, device=like.device)
    return bits.to(like.dtype) * 2 - 1


def random_windows(x: Tensor, s: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """A random s x s window per sample of ``x`` ``(b, C, H, W)``: mask (b, 1, H, W), local
    row (b, H) / col (b, W) index into the window (clamped outside it)."""
    b, _, h, w = x.shape
    vh = torch.randint(0, h - s + 1, (b, 1), generator=gen, device=x.device)  # top row
    vw = torch.randint(0, w - s + 1, (b, 1), generator=gen, device=x.device)  # left col
    li = torch.arange(h, device=x.device) - vh  # (b, H) row inside the window
    lj = torch.arange(w, device=x.device) - vw  # (b, W)
    mask = ((li >= 0) & (li < s))[:, None, :, None] & ((lj >= 0) & (lj < s))[:, None, None, :]
    return mask, li.clamp(0, s - 1), lj.clamp(0, s - 1)


def reference_sign(shape: tuple[int, ...], like: Tensor, gen: torch.Generator) -> Tensor:
    """``sign(2 u - 1)`` of float32 uniforms ``u`` of ``shape``, in ``like``'s dtype: the original
    AutoAttack Square's ``random_choice`` (the same draws from the same seed)."""
    u = torch.rand(shape, generator=gen, device=like.device, dtype=torch.float32)
    return torch.sign(2 * u - 1).to(like.dtype)


def reference_window(x: Tensor, s: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """One s x s window and one sign per channel for the whole batch ``x`` ``(b, C, H, W)``,
    drawn as the original AutoAttack's L-inf Square draws them (``pyautoattack``: top row and
    left column ``int((H - s) u)``, so never the last position): mask (1, 1, H, W) and signs
    (1, C, 1, 1)."""
    _, c, h, w = x.shape
    def uniform() -> Tensor:  # (1,) float32, one draw of the generator
        return torch.rand([1], generator=gen, device=x.device, dtype=torch.float32)

    vh = int(((h - s) * uniform()).long())
    vw = int(((w - s) * uniform()).long())
    sign = reference_sign((c, 1, 1), x, gen).unsqueeze(0)
    mask = torch.zeros((1, 1, h, w), dtype=torch.bool, device=x.device)
    mask[..., vh:vh + s, vw:vw + s] = True
    return mask, sign


def eta_grid(x: Tensor, norm: str, gen: torch.Generator) -> Tensor:
    """The l2/l1 initialisation before scaling: a grid of s x s :func:`eta_pattern` blocks
    (s = H // 5), centred, each with a random sign per (sample, channel). Departures from the
    reference: the grid also fills the cut-off blocks at the right and bottom edges (the
    reference stops after ``H // s`` blocks, e.g. leaves rows 26-27 of a 28-pixel image
    empty), and the blocks are not randomly transposed."""
    n, c, h, w = x.shape
    s = max(h // 5, 1)
    eta = eta_pattern(s, x, transpose=False, norm=norm)  # (s, s)
    delta = torch.zeros_like(x)  # (B, C, H, W)
    start = (h - 5 * s) // 2 if h >= 5 * s else 0
    for top in range(start, h, s):  # block positions, not samples: <= 25-64 iterations
        for left in range(start, w, s):
            hh, ww = min(s, h - top), min(s, w - left)
            sign = random_sign((n, c, 1, 1), x, gen)
            delta[:, :, top:top + hh, left:left + ww] += eta[:hh, :ww] * sign
    return delta


def placed_eta(
    x: Tensor, s: int, li: Tensor, lj: Tensor, mask: Tensor, norm: str, gen: torch.Generator
) -> Tensor:
    """The (s, s) :func:`eta_pattern` pasted at each sample's window (:func:`random_windows`'s
    ``li``, ``lj``, ``mask``), randomly transposed per sample: ``(b, 1, H, W)``."""
    etas = torch.stack([eta_pattern(s, x, False, norm), eta_pattern(s, x, True, norm)])
    flip = torch.randint(0, 2, (len(x), 1, 1), generator=gen, device=x.device)
    return etas[flip, li[:, :, None], lj[:, None, :]][:, None] * mask

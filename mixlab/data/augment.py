"""Batched, on-device image augmentation (DESIGN.md, "Augmentation runs batched on the tensor's device").

One call augments a whole batch with independent random parameters per sample:

1. random resized crop + horizontal flip, as ONE affine grid per batch (``F.affine_grid`` +
   ``F.grid_sample``, bilinear) that maps straight to ``out_size``;
2. colour jitter (brightness, contrast, saturation, hue), applied to a sample with probability
   ``jitter_p`` like torchvision's ``RandomApply([ColorJitter(...)], p)``;
3. random grayscale; every step clamps to [0, 1];
4. Sobel (grayscale -> gx, gy; IIC and NMM §8.2) or per-channel normalization.

Randomness: all B parameter vectors are drawn on the CPU from the ``torch.Generator`` passed in and
then moved to the input's device, so a seed gives the same parameters on every device.

Differences from torchvision's per-image PIL pipeline, by choice: crop boxes are continuous
(sub-pixel) rather than rounded to whole pixels, and resampling is bilinear without antialiasing;
the jitter runs in the fixed order brightness, contrast, saturation, hue (torchvision shuffles the
order per image); hue is a rotation by ``2*pi*h`` of the chroma plane in YIQ space (a 3x3 matrix per
sample) rather than a shift of the HSV hue, which it approximates and which it matches on gray
pixels (left unchanged by both).

Recipes (``RECIPES``):

- ``moco``: MoCo v2 (the recipe MiCE App. D "follows closely"): RandomResizedCrop scale
  (0.2, 1), ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8, RandomGrayscale p=0.2, horizontal flip.
  The MiCE paper names the operations but not their strengths; (0.2, 1) is MoCo's crop scale.
  On 1-channel input saturation, hue and grayscale are no-ops, so ``moco`` has ``moco-gray``
  semantics there.
- ``moco-v1``: what MiCE's released code runs (MoCo v1 order, as listed in App. D): crop
  (0.2, 1), RandomGrayscale p=0.2 *before* an always-applied ColorJitter(0.4, 0.4, 0.4, 0.4), flip.
- ``moco-gray``: for 1-channel data: crop (0.2, 1), flip, brightness/contrast jitter 0.4, p=0.8.
- ``light``: crop scale (0.5, 1) + flip.
- ``none``: identity (only resize to ``out_size``, then Sobel/normalize); also passes 2-D point
  features ``[N, D]`` through unchanged.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_GRAY = (0.2989, 0.587, 0.114)  # luma weights of torchvision's rgb_to_grayscale
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                            [0.596, -0.274, -0.322],
                            [0.211, -0.523, 0.312]], dtype=torch.float64)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
_TRIES = 10  # RandomResizedCrop attempts per sample before the centre-crop fallback
_N_CROP = 2 * _TRIES + 3  # uniforms per sample for crop (area, aspect per try; top, left) + flip


@dataclass(frozen=True)
class Recipe:
    """Augmentation strengths. ``scale=None`` means no crop; ``jitter`` = (brightness, contrast,
    saturation, hue) as in torchvision's ColorJitter; ``gray_first`` puts grayscale before jitter."""

    scale: tuple[float, float] | None = None
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = False
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    jitter_p: float = 0.0
    gray_p: float = 0.0
    gray_first: bool = False

    @property
    def is_identity(self) -> bool:
        return (self.scale is None and not self.flip and self.gray_p == 0
                and (self.jitter_p == 0 or not any(self.jitter)))


RECIPES: dict[str, Recipe] = {
    "moco": Recipe(scale=(0.2, 1.0), flip=True, jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, gray_p=0.2),
    "moco-v1": Recipe(scale=(0.2, 1.0), flip=True, jitter=(0.4, 0.4, 0.4, 0.4), jitter_p=1.0,
                      gray_p=0.2, gray_first=True),
    "moco-gray": Recipe(scale=(0.2, 1.0), flip=True, jitter=(0.4, 0.4, 0.0, 0.0), jitter_p=0.8),
    "light": Recipe(scale=(0.5, 1.0), flip=True),
    "none": Recipe(),
}


def _gray(x: Tensor) -> Tensor:
    """[B,C,H,W] -> [B,1,H,W]: luma for RGB, channel mean otherwise."""
    if x.shape[1] == 3:
        w = torch.tensor(_GRAY, dtype=x.dtype, device=x.device)
        return torch.einsum("c,bchw->bhw", w, x).unsqueeze(1)
    return x.mean(1, keepdim=True)


def sobel(x: Tensor) -> Tensor:
    """Grayscale then horizontal/vertical Sobel filters -> [B,2,H,W] (NMM §8.2, as in IIC).
    Replicate padding, so a constant image gives exactly zero."""
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernel = torch.stack([gx, gx.T]).unsqueeze(1)  # [2,1,3,3]
    return F.conv2d(F.pad(_gray(x), (1, 1, 1, 1), mode="replicate"), kernel)


def _crop_flip_theta(u: Tensor, recipe: Recipe, h: int, w: int) -> Tensor:
    """Affine matrices [B,2,3] for RandomResizedCrop + flip, from uniforms u [B, _N_CROP].

    Same sampling as torchvision: area fraction ~ U(scale), log aspect ~ U(log ratio), first of
    ``_TRIES`` boxes that fits, else the centre crop clamped to the ratio range. No crop
    (``scale=None``) is the whole image."""
    if recipe.scale is None:
        cw, ch = torch.full_like(u[:, 0], float(w)), torch.full_like(u[:, 0], float(h))
    else:
        frac = recipe.scale[0] + (recipe.scale[1] - recipe.scale[0]) * u[:, :_TRIES]
        lo, hi = math.log(recipe.ratio[0]), math.log(recipe.ratio[1])
        aspect = torch.exp(lo + (hi - lo) * u[:, _TRIES:2 * _TRIES])
        cw, ch = torch.sqrt(h * w * frac * aspect), torch.sqrt(h * w * frac / aspect)
        fits = (cw <= w) & (ch <= h)
        first = fits.to(torch.int8).argmax(1, keepdim=True)
        fw, fh = float(w), float(h)
        if w / h < recipe.ratio[0]:
            fh = w / recipe.ratio[0]
        elif w / h > recipe.ratio[1]:
            fw = h * recipe.ratio[1]
        ok = fits.any(1)
        cw = torch.where(ok, cw.gather(1, first)[:, 0], fw)
        ch = torch.where(ok, ch.gather(1, first)[:, 0], fh)
    top = u[:, 2 * _TRIES] * (h - ch)
    left = u[:, 2 * _TRIES + 1] * (w - cw)
    sign = torch.where(u[:, 2 * _TRIES + 2] < 0.5, -1.0, 1.0) if recipe.flip else torch.ones_like(cw)
    zero = torch.zeros_like(cw)
    return torch.stack([
        torch.stack([sign * cw / w, zero, (2 * left + cw) / w - 1], 1),
        torch.stack([zero, ch / h, (2 * top + ch) / h - 1], 1),
    ], 1)


def _hue_matrices(hue: Tensor) -> Tensor:
    """Per-sample 3x3 RGB matrices rotating the YIQ chroma (I, Q) plane by 2*pi*hue; the sense of
    rotation makes a positive hue move colours the way torchvision's ``adjust_hue`` does."""
    t = 2 * math.pi * hue.double()
    c, s = torch.cos(t), torch.sin(t)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    rot = torch.stack([one, zero, zero, zero, c, s, zero, -s, c], 1).view(-1, 3, 3)
    return (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).float()  # float64 product: hue 0 gives the identity


def _jitter_factors(u: Tensor, recipe: Recipe) -> tuple[Tensor, Tensor]:
    """From uniforms u [B,5] (on the CPU): factors [B,3] (brightness, contrast, saturation) and hue
    matrices [B,3,3]; identity for the samples (probability 1 - jitter_p) that skip the jitter."""
    b, c, s, h = recipe.jitter
    lo = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h])
    hi = torch.tensor([1 + b, 1 + c, 1 + s, h])
    f = lo + (hi - lo) * u[:, :4]
    f = torch.where((u[:, 4] < recipe.jitter_p)[:, None], f, torch.tensor([1.0, 1.0, 1.0, 0.0]))
    return f[:, :3], _hue_matrices(f[:, 3])


def _color_jitter(x: Tensor, f: Tensor, hue: Tensor, recipe: Recipe) -> Tensor:
    """Brightness, contrast, saturation (factors f [B,3]), hue (matrices [B,3,3]); clamps after each."""
    b, c, s, h = recipe.jitter
    if b:
        x = (x * f[:, 0, None, None, None]).clamp_(0, 1)
    if c:
        m = _gray(x).mean((1, 2, 3), keepdim=True)
        k = f[:, 1, None, None, None]
        x = (k * x + (1 - k) * m).clamp_(0, 1)
    if x.shape[1] != 3:
        return x
    if s:
        k = f[:, 2, None, None, None]
        x = (k * x + (1 - k) * _gray(x)).clamp_(0, 1)
    if h:
        x = torch.einsum("bij,bjhw->bihw", hue, x).clamp_(0, 1)
    return x


def _random_gray(x: Tensor, u: Tensor) -> Tensor:
    return torch.where(u[:, None, None, None], _gray(x).expand_as(x), x) if x.shape[1] == 3 else x


class Augmenter:
    """Batched augmentation of uint8 (or [0,1] float) images ``[B,C,H,W]`` to float32
    ``[B, out_channels, out_size, out_size]``; see the module docstring for the recipes."""

    def __init__(self, recipe: "str | Recipe", in_channels: int, out_size: int, *,
                 sobel: bool = False, mean=None, std=None):
        if isinstance(recipe, str):
            if recipe not in RECIPES:
                raise ValueError(f"unknown augmentation recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
            recipe = RECIPES[recipe]
        self.recipe, self.in_channels, self.out_size, self.sobel = recipe, in_channels, out_size, sobel
        self.out_channels = 2 if sobel else in_channels
        self.mean = self._per_channel(0.5 if mean is None else mean, "mean")
        self.std = self._per_channel(0.5 if std is None else std, "std")

    def _per_channel(self, v, name: str) -> Tensor:
        t = torch.as_tensor(v, dtype=torch.float32).flatten()
        if t.numel() == 1:
            t = t.expand(self.in_channels)
        if t.numel() != self.in_channels:
            raise ValueError(f"{name} has {t.numel()} values for {self.in_channels} input channels")
        return t.reshape(1, -1, 1, 1)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augment a batch; parameters come from the CPU ``generator`` (one row of uniforms per sample)."""
        r = self.recipe
        if x.dim() == 2 and r.is_identity and not self.sobel:
            return x.float()
        x = self._to_unit(x)
        if r.is_identity:
            return self._finish(self._resize(x))
        if generator.device.type != "cpu":
            raise ValueError("Augmenter draws its parameters from a CPU torch.Generator")
        B, _, H, W = x.shape
        u = torch.rand(B, _N_CROP + 6, generator=generator)
        theta = _crop_flip_theta(u[:, :_N_CROP], r, H, W)
        jitter, hue = _jitter_factors(u[:, _N_CROP:_N_CROP + 5], r)
        gray = u[:, _N_CROP + 5] < r.gray_p
        theta, jitter, hue, gray = (t.to(x.device, non_blocking=True) for t in (theta, jitter, hue, gray))
        grid = F.affine_grid(theta, [B, x.shape[1], self.out_size, self.out_size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if r.gray_first:
            x = _color_jitter(_random_gray(x, gray), jitter, hue, r)
        else:
            x = _random_gray(_color_jitter(x, jitter, hue, r), gray)
        return self._finish(x)

    def clean(self, x: Tensor) -> Tensor:
        """Deterministic view for evaluation: resize only if H != out_size, then Sobel/normalize."""
        if x.dim() == 2 and not self.sobel:
            return x.float()
        return self._finish(self._resize(self._to_unit(x)))

    def _to_unit(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"recipe needs images [B,C,H,W]; got shape {tuple(x.shape)} "
                             "(use recipe 'none' without sobel for point features [N,D])")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels, got {x.shape[1]}")
        return x.float().div_(255) if x.dtype == torch.uint8 else x.float()

    def _resize(self, x: Tensor) -> Tensor:
        if x.shape[-2:] == (self.out_size, self.out_size):
            return x
        return F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear",
                             align_corners=False, antialias=True).clamp_(0, 1)

    def _finish(self, x: Tensor) -> Tensor:
        if self.sobel:
            return sobel(x)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def make_augmenter(recipe: str, in_channels: int, out_size: int, **kw) -> Augmenter:
    """Build an ``Augmenter``; ``"moco"`` on 1-channel input has ``"moco-gray"`` semantics
    (saturation, hue and grayscale are no-ops on one channel)."""
    return Augmenter(recipe, in_channels, out_size, **kw)

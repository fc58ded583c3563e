"""Batched augmentation (mixlab.data.augment): randomness, determinism, identities, Sobel."""

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from mixlab.data.augment import RECIPES, Augmenter, Recipe, _color_jitter, _hue_matrices, make_augmenter


def _images(b=8, c=3, s=32, seed=0):
    return torch.randint(0, 256, (b, c, s, s), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_shape_dtype_and_range(recipe, channels, size):
    x = _images(c=channels, s=size)
    y = Augmenter(recipe, channels, size, mean=0.0, std=1.0)(x, _gen())
    assert y.shape == x.shape and y.dtype == torch.float32
    assert y.min() >= 0 and y.max() <= 1
    z = make_augmenter(recipe, channels, 24)(x, _gen())  # default normalization 0.5/0.5
    assert z.shape == (8, channels, 24, 24) and z.min() >= -1 and z.max() <= 1


@pytest.mark.parametrize("recipe,channels", [("moco", 3), ("moco", 1), ("moco-gray", 1), ("light", 3)])
def test_parameters_differ_per_sample(recipe, channels):
    x = _images(b=1, c=channels).expand(4, -1, -1, -1)
    y = Augmenter(recipe, channels, 32)(x, _gen())
    assert all(not torch.allclose(y[0], y[i]) for i in range(1, 4))


def test_seeded_generator_reproduces():
    aug, x = Augmenter("moco", 3, 32), _images()
    assert torch.equal(aug(x, _gen(1)), aug(x, _gen(1)))
    assert not torch.allclose(aug(x, _gen(1)), aug(x, _gen(2)))


def test_clean_is_deterministic_resize_and_normalize():
    x = _images(s=32)
    aug = Augmenter("moco", 3, 32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    assert torch.equal(aug.clean(x), aug.clean(x))
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(aug.clean(x), (x / 255 - mean) / std)
    assert Augmenter("moco", 3, 16).clean(x).shape == (8, 3, 16, 16)


def test_none_recipe_equals_clean():
    x = _images()
    aug = Augmenter("none", 3, 32)
    assert torch.equal(aug(x, _gen()), aug.clean(x))


def test_full_crop_without_flip_is_identity():
    """scale=(1, 1): every sampled box misses, the fallback is the whole image, and the affine
    grid samples exactly the pixel centres."""
    x = _images()
    aug = Augmenter(Recipe(scale=(1.0, 1.0)), 3, 32, mean=0.0, std=1.0)
    torch.testing.assert_close(aug(x, _gen()), x / 255, atol=1e-6, rtol=0)


def test_flip_only_gives_input_or_mirror():
    x = _images(b=64)
    y = Augmenter(Recipe(flip=True), 3, 32, mean=0.0, std=1.0)(x, _gen())
    same = (y - x / 255).flatten(1).abs().amax(1) < 1e-6
    mirrored = (y - x.flip(-1) / 255).flatten(1).abs().amax(1) < 1e-6
    assert torch.all(same ^ mirrored) and 10 < mirrored.sum() < 54


def test_color_ops_match_torchvision():
    """Brightness, contrast, saturation with fixed per-sample factors equal torchvision's ops."""
    x = _images(b=3).float() / 255
    f = torch.tensor([[1.3, 0.7, 1.2], [0.6, 1.4, 0.6], [1.0, 1.0, 1.0]])
    y = _color_jitter(x.clone(), f, _hue_matrices(torch.zeros(3)), RECIPES["moco"])
    for i, (b, c, s) in enumerate(f.tolist()):
        ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i], b), c), s)
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)


def test_hue_keeps_gray_pixels():
    x = torch.linspace(0, 1, 16).view(1, 1, 4, 4).expand(2, 3, 4, 4).contiguous()
    y = _color_jitter(x.clone(), torch.ones(2, 3), _hue_matrices(torch.tensor([0.1, -0.4])), RECIPES["moco-v1"])
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_random_grayscale_rate():
    y = Augmenter("moco", 3, 16, mean=0.0, std=1.0)(_images(b=2000, s=16), _gen())
    gray = (y.amax(1) - y.amin(1)).flatten(1).amax(1) < 1e-6
    assert 0.16 < gray.float().mean() < 0.24  # RandomGrayscale p=0.2


def test_sobel_two_channels_zero_on_constant():
    x = torch.full((4, 3, 32, 32), 77, dtype=torch.uint8)
    aug = Augmenter("moco", 3, 32, sobel=True)
    assert aug.out_channels == 2
    for y in (aug(x, _gen()), aug.clean(x)):
        assert y.shape == (4, 2, 32, 32) and y.abs().max() < 1e-5
    edge = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    edge[..., 4:] = 255
    g = Augmenter("none", 1, 8, sobel=True).clean(edge)
    assert g[0, 0].abs().sum() > 0 and g[0, 1].abs().max() == 0  # vertical edge: gx only


def test_point_features():
    pts = torch.randn(10, 2)
    assert torch.equal(Augmenter("none", 2, 1)(pts, _gen()), pts)
    assert torch.equal(Augmenter("none", 2, 1).clean(pts), pts)
    with pytest.raises(ValueError, match="none"):
        Augmenter("moco", 2, 1)(pts, _gen())


def test_bad_input():
    with pytest.raises(ValueError, match="moco.*light.*none") as e:
        make_augmenter("simclr", 3, 32)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="channels"):
        Augmenter("moco", 1, 32)(_images(c=3), _gen())
    with pytest.raises(ValueError, match="mean"):
        Augmenter("moco", 3, 32, mean=(0.5, 0.5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_parameters_on_gpu():
    x, aug = _images(), Augmenter("moco", 3, 32)
    torch.testing.assert_close(aug(x.cuda(), _gen(3)).cpu(), aug(x, _gen(3)), atol=1e-4, rtol=0)

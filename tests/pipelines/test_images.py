import numpy as np
import PIL.Image
import pytest
import torch

from sfumato.pipelines import images


@pytest.fixture(scope="module")
def oracle():
    from diffusers.image_processor import VaeImageProcessor

    # the processors diffusers' SD img2img / inpaint pipelines build
    return {
        "image": VaeImageProcessor(vae_scale_factor=8),
        "rgb": VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True),
        "mask": VaeImageProcessor(
            vae_scale_factor=8, do_normalize=False, do_binarize=True, do_convert_grayscale=True
        ),
    }


def _rgb(h=48, w=40, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": None}[mode]
    shape = (h, w) if channels is None else (h, w, channels)
    return PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


def _mask(h=48, w=40, seed=1, mode="L"):
    rng = np.random.default_rng(seed)
    m = (rng.random((h, w)) > 0.5).astype(np.uint8) * 255
    return PIL.Image.fromarray(m, mode="L").convert(mode)


@pytest.mark.parametrize("size", [(48, 40), (67, 65)])
def test_pil_matches_diffusers(oracle, size):
    im = _rgb(*size)
    ours = images.preprocess_image(im)
    torch.testing.assert_close(ours, oracle["image"].preprocess(im))
    assert ours.shape == (1, 3, size[0] // 8 * 8, size[1] // 8 * 8)
    batch = [im, _rgb(*size, seed=5)]
    torch.testing.assert_close(
        images.preprocess_image(batch, 32, 24), oracle["image"].preprocess(batch, 32, 24)
    )


def test_numpy_and_tensor_match_diffusers(oracle):
    arr = np.random.default_rng(0).random((2, 41, 50, 3)).astype(np.float32)
    torch.testing.assert_close(images.preprocess_image(arr), oracle["image"].preprocess(arr))
    torch.testing.assert_close(images.preprocess_image(list(arr)), oracle["image"].preprocess(list(arr)))
    t = torch.from_numpy(arr).permute(0, 3, 1, 2)
    torch.testing.assert_close(images.preprocess_image(t, 32, 40), oracle["image"].preprocess(t, 32, 40))
    torch.testing.assert_close(images.preprocess_image(t[0]), oracle["image"].preprocess(t[0]))


def test_latent_tensor_passes_through_but_rgba_images_do_not(oracle):
    latents = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(images.preprocess_image(latents), latents)
    rgba = _rgb(mode="RGBA")
    ours = images.preprocess_image(rgba)
    assert ours.shape[1] == 3
    torch.testing.assert_close(ours, oracle["rgb"].preprocess(rgba))
    arr = np.asarray(rgba).astype(np.float32) / 255
    assert images.preprocess_image(arr).shape == (1, 3, 48, 40)


def test_greyscale_and_uint8(oracle):
    grey = _rgb(mode="L")
    torch.testing.assert_close(images.preprocess_image(grey), oracle["rgb"].preprocess(grey))
    rgb = _rgb()
    torch.testing.assert_close(
        images.preprocess_image(np.asarray(rgb)),
        oracle["image"].preprocess(np.asarray(rgb).astype(np.float32) / 255),
    )
    one_channel = torch.rand(1, 1, 16, 16)
    assert images.preprocess_image(one_channel).shape == (1, 3, 16, 16)


def test_bad_images_named():
    with pytest.raises(ValueError, match="`image` is required"):
        images.preprocess_image(None)
    with pytest.raises(ValueError, match="`init` must be a PIL image"):
        images.preprocess_image(123, name="init")
    with pytest.raises(FileNotFoundError, match="`image`"):
        images.preprocess_image("/nonexistent/file.png")
    with pytest.raises(ValueError, match="0..255"):
        images.preprocess_image(torch.rand(1, 3, 16, 16) * 255)
    with pytest.raises(ValueError, match="NaN"):
        images.preprocess_image(torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="mixes"):
        images.preprocess_image([_rgb(), np.zeros((48, 40, 3), np.float32)])
    with pytest.raises(ValueError, match="at least 8 pixels"):
        images.preprocess_image(_rgb(4, 4))


def test_path_input(tmp_path):
    im = _rgb()
    im.save(tmp_path / "x.png")
    torch.testing.assert_close(images.preprocess_image(tmp_path / "x.png"), images.preprocess_image(im))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read"):
        images.preprocess_image(str(tmp_path / "bad.png"))


def test_negative_tensor_is_taken_as_normalised(oracle):
    t = torch.rand(1, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(images.preprocess_image(t), t)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_mask_pil_matches_diffusers(oracle, mode):
    m = _mask(mode=mode)
    ours = images.preprocess_mask(m, 48, 40)
    torch.testing.assert_close(ours, oracle["mask"].preprocess(m, height=48, width=40))
    assert ours.shape == (1, 1, 48, 40) and set(ours.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(
        images.preprocess_mask(m, 24, 16), oracle["mask"].preprocess(m, height=24, width=16)
    )


def test_mask_arrays_match_diffusers(oracle):
    soft = np.random.default_rng(0).random((48, 40)).astype(np.float32)
    torch.testing.assert_close(images.preprocess_mask(soft), oracle["mask"].preprocess(soft))
    batch = np.stack([soft, 1 - soft])
    torch.testing.assert_close(images.preprocess_mask(batch), oracle["mask"].preprocess(batch))
    t = torch.from_numpy(soft)
    torch.testing.assert_close(images.preprocess_mask(t[None]), oracle["mask"].preprocess(t[None]))
    three = torch.stack([t, 1 - t, t.flip(0)])  # (B, H, W) with B = 3: three masks, not RGB
    torch.testing.assert_close(images.preprocess_mask(three), oracle["mask"].preprocess(three))
    torch.testing.assert_close(
        images.preprocess_mask(t[None, None], 24, 24), oracle["mask"].preprocess(t[None, None], 24, 24)
    )


def test_mask_checks():
    with pytest.raises(ValueError, match="`mask_image` is required"):
        images.preprocess_mask(None)
    with pytest.raises(ValueError, match="mask_image` is 32x32.*image` is 40x48"):
        images.check_mask_matches(_rgb(), _mask(32, 32))
    images.check_mask_matches(_rgb(), _mask())
    with pytest.raises(ValueError, match="batch size 2 but `image` has 3"):
        images.check_batch_matches(torch.zeros(3, 3, 8, 8), torch.zeros(2, 1, 8, 8))


def test_size_checks():
    images.check_size(64, 512)
    with pytest.raises(ValueError, match="divisible by 8.*height=65 -> 64 or 72"):
        images.check_size(65, 64)
    for bad in (0, -8):
        with pytest.raises(ValueError, match="`height` must be a positive"):
            images.check_size(bad, 64)
    for bad in (1.5, "512", None, True):
        with pytest.raises(TypeError, match="`width` must be an int"):
            images.check_size(64, bad)


def test_postprocess_matches_diffusers(oracle):
    x = torch.randn(2, 3, 16, 24) * 1.2
    proc = oracle["image"]
    for kind in ("pt", "np", "latent"):
        ours, theirs = images.postprocess(x, kind), proc.postprocess(x, output_type=kind)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs))
    ours, theirs = images.postprocess(x, "pil"), proc.postprocess(x, output_type="pil")
    assert [np.asarray(a).tolist() == np.asarray(b).tolist() for a, b in zip(ours, theirs)] == [True, True]
    flagged = images.postprocess(x, "pt", do_denormalize=[True, False])
    torch.testing.assert_close(flagged, proc.postprocess(x, output_type="pt", do_denormalize=[True, False]))
    assert images.postprocess(x[:, :1], "pil")[0].mode == "L"
    with pytest.raises(ValueError, match="'pil', 'np', 'pt', 'latent'"):
        images.postprocess(x, "foo")


def test_round_trip_pil_numpy_torch():
    im = _rgb(16, 24)
    back = images.postprocess(images.preprocess_image(im), "pil")[0]
    assert np.array_equal(np.asarray(back), np.asarray(im))


def test_latent_mask_and_masked_image():
    mask = images.preprocess_mask(_mask())
    small = images.mask_to_latents(mask, 6, 5)
    assert small.shape == (1, 1, 6, 5)
    image = images.preprocess_image(_rgb())
    masked = images.masked_image(image, mask)
    assert torch.all(masked[mask.expand_as(image) >= 0.5] == 0)
    torch.testing.assert_close(masked[mask.expand_as(image) < 0.5], image[mask.expand_as(image) < 0.5])


def test_pixel_limit_before_allocation():
    images.check_pixels(1024, 1024)
    images.check_pixels(4096, 4096)  # the default limit
    with pytest.raises(ValueError, match="above max_pixels=16,777,216"):
        images.check_pixels(8192, 4096)
    # SD's first attention at 4096x4096: 512 * 512 latent tokens, 137 GB for one naive fp16 map
    with pytest.raises(ValueError, match="262,144 tokens.*137 GB.*max_pixels=None"):
        images.check_pixels(4096, 4096, max_pixels=1024 * 1024)
    images.check_pixels(8192, 8192, max_pixels=None)

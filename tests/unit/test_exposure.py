"""Dark photos: exposure measured from each image's own luma and corrected at decode, the
correction recorded in its row; and the low-light copies the crowd report measures it on."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from model.codecs.exposure import (
    BLACK_BELOW,
    DENOISE_RADIUS,
    NOISY_ABOVE,
    correct_exposure,
    luma_of,
    noise_sigma,
)
from model.synth.darken import darken
from pipeline.graph.tasks import decode_batch
from schemas.spec import DecodeSpec, StorageSpec
from tests.helpers import REPO_ROOT

PHOTO = REPO_ROOT / "tests/data/coco_sample/images/000000196141.jpg"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.open(PHOTO).convert("RGB"))


def test_luma_is_rec601_of_uint8_pixels():
    grey = np.full((8, 8, 3), 51, np.uint8)
    assert luma_of(grey).mean() == pytest.approx(0.2)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    assert luma_of(red).mean() == pytest.approx(0.299)


def test_noise_sigma_measures_added_white_noise_and_ignores_smooth_content():
    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(200.0), np.arange(300.0)) / 4.0  # smooth: no noise
    assert noise_sigma(ramp) == pytest.approx(0.0, abs=1e-9)
    assert noise_sigma(ramp + rng.normal(0.0, 6.0, ramp.shape)) == pytest.approx(6.0, rel=0.05)


def test_a_bright_photo_is_left_exactly_as_it_is(photo):
    image, exposure = correct_exposure(photo, dark_below=0.2)
    assert image is photo
    assert (exposure.denoised, exposure.gain, exposure.noise) == (False, 1.0, None)
    assert exposure.luma == pytest.approx(luma_of(photo).mean())


def test_a_clean_dim_photo_is_left_as_it_is(photo):
    dim = (photo * 0.4).astype(np.uint8)  # dark, but without a sensor's noise
    image, exposure = correct_exposure(dim, dark_below=0.2)
    assert exposure.luma < 0.2 and exposure.noise < NOISY_ABOVE
    assert image is dim and not exposure.denoised and exposure.gain == 1.0


def test_a_noisy_dark_photo_is_denoised_but_not_brightened(photo):
    dark = darken(photo, 1 / 12, seed=0)
    image, exposure = correct_exposure(dark, dark_below=0.2)
    assert exposure.denoised and exposure.gain == 1.0 and exposure.noise > NOISY_ABOVE
    blurred = np.asarray(Image.fromarray(dark).filter(ImageFilter.GaussianBlur(DENOISE_RADIUS)))
    np.testing.assert_array_equal(image, blurred)
    assert noise_sigma(luma_of(image, 1) * 255) < exposure.noise / 2


def test_a_near_black_photo_is_brightened_to_the_target(photo):
    black = (photo // 40).astype(np.uint8)  # brightest percent about 6/255: near black
    assert np.percentile(luma_of(black), 99) < BLACK_BELOW
    image, exposure = correct_exposure(black, dark_below=0.2)
    assert 8.0 < exposure.gain <= 32.0
    assert np.percentile(luma_of(image), 99) == pytest.approx(0.5, abs=0.05)


def test_darken_is_deterministic_darker_and_noisy(photo):
    once, again = darken(photo, 1 / 12, seed=3), darken(photo, 1 / 12, seed=3)
    np.testing.assert_array_equal(once, again)
    assert not np.array_equal(once, darken(photo, 1 / 12, seed=4))
    # 1/12 of the light: about (1/12) ** (1/2.2) = 0.32 of the sRGB values, plus noise.
    ratio = once.astype(float).mean() / photo.astype(float).mean()
    assert 0.2 < ratio < 0.45
    with pytest.raises(ValueError, match="light_fraction"):
        darken(photo, 0.0, seed=0)


@pytest.mark.parametrize(("exposure", "corrected"), [("auto", True), ("off", False)])
def test_decode_corrects_dark_images_as_asked_and_says_so_in_the_row(
    photo, tmp_path, exposure, corrected
):
    path = tmp_path / "dark.png"
    Image.fromarray(darken(photo, 1 / 12, seed=0)).save(path)
    spec = DecodeSpec(exposure=exposure)
    batch = decode_batch(
        {"uri": np.array([str(path), str(tmp_path / "gone.jpg")])}, spec, StorageSpec()
    )
    assert batch["status"].tolist() == ["ok", "error"]
    assert batch["exposure_denoised"].tolist() == [corrected, False]
    assert batch["exposure_luma"][0] < 0.2 and batch["exposure_gain"][0] == 1.0
    assert (batch["exposure_noise"][0] > NOISY_ABOVE) == corrected
    decoded = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(batch["image"][0], decoded) is not corrected

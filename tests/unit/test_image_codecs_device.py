"""The device-side letterbox (used on CUDA) gives the inputs Pillow's letterbox gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.codecs.image import letterbox, letterbox_batch, to_device_uint8


@pytest.mark.parametrize("shape", [(480, 360), (301, 517), (97, 1000), (256, 256), (120, 80)])
def test_device_resize_matches_pillow(shape):
    rng = np.random.default_rng(sum(shape))
    # Smooth content (a real photo's), so that the two resamplers' rounding is all that differs.
    small = rng.integers(0, 256, size=(shape[0] // 8 + 2, shape[1] // 8 + 2, 3), dtype=np.uint8)
    image = np.asarray(
        torch.nn.functional.interpolate(
            torch.from_numpy(small).permute(2, 0, 1)[None].float(), size=shape, mode="bilinear"
        )[0]
        .permute(1, 2, 0)
        .round()
        .byte()
    )
    on_device, scales = letterbox_batch([image], 256, "cpu", resize_on_device=True)
    expected, scale = letterbox(image, 256)
    assert scales[0] == pytest.approx(scale)
    ours = on_device[0].permute(1, 2, 0).numpy()
    difference = np.abs(ours - expected.astype(np.float32))
    assert difference.mean() < 0.5
    assert difference.max() <= 3.0
    # The padding (right or bottom of the resized image) is black in both.
    new_h, new_w = (min(256, max(1, round(n * scale))) for n in shape)
    for padded in (ours, expected):
        assert not padded[new_h:].any() and not padded[:, new_w:].any()


def test_both_paths_give_one_batch_in_input_order():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in ((50, 80, 3), (90, 40, 3))]
    for on_device in (False, True):
        batch, scales = letterbox_batch(images, 64, "cpu", resize_on_device=on_device)
        assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.float32
        assert scales.tolist() == pytest.approx([64 / 80, 64 / 90])
        assert batch[0, :, 40:, :].abs().sum() == 0  # 50 x 80 → 40 x 64: rows below 40 padded
        assert batch[1, :, :, 28:].abs().sum() == 0  # 90 x 40 → 64 x 28: columns past 28 padded


def test_uint8_arrays_travel_as_uint8_even_when_read_only():
    array = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    array.flags.writeable = False
    tensor = to_device_uint8(array, "cpu")
    assert tensor.dtype == torch.uint8 and tensor.numpy().tolist() == array.tolist()

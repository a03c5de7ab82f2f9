"""preprocess_image: any mode to one channel, pad keeps the aspect ratio, crop takes the centre."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mura_core.data import ImageDecodeError, preprocess_image


def gray_picture(h: int = 90, w: int = 60) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy * 3 + xx * 2) % 256).astype(np.uint8)


@pytest.mark.parametrize("mode", ["pad", "crop"])
def test_every_color_mode_gives_the_grayscale_result(tmp_path: Path, mode: str) -> None:
    gray = gray_picture()
    reference = preprocess_image(Image.fromarray(gray), 32, mode)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    variants = {
        "rgb.png": Image.fromarray(rgb),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full(gray.shape, 255, np.uint8)])),
        "palette.png": Image.fromarray(gray).convert("P"),
        "sixteen.png": Image.fromarray(gray.astype(np.uint16) * 257),  # I;16, full range
    }
    for name, img in variants.items():
        img.save(tmp_path / name)
        out = preprocess_image(tmp_path / name, 32, mode)
        assert out.dtype == np.uint8 and out.shape == (32, 32)
        np.testing.assert_array_equal(out, reference, err_msg=name)


def test_alpha_is_composited_over_black() -> None:
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, 10:, 3] = 255  # left half transparent
    out = preprocess_image(Image.fromarray(rgba), 20)
    assert (out[:, :9] == 0).all() and (out[:, 11:] == 200).all()


def test_jpeg_is_read(tmp_path: Path) -> None:
    Image.fromarray(gray_picture(200, 150)).save(tmp_path / "x.jpg", quality=95)
    out = preprocess_image(tmp_path / "x.jpg", 64)
    ref = preprocess_image(Image.fromarray(gray_picture(200, 150)), 64)
    assert out.shape == (64, 64) and np.abs(out.astype(int) - ref).mean() < 6


def bright_box(out: np.ndarray, level: int = 128) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(out > level)
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


def test_pad_keeps_the_aspect_ratio_of_a_known_rectangle() -> None:
    img = np.zeros((200, 300), np.uint8)  # landscape
    img[40:120, 60:220] = 255  # 80 tall, 160 wide: 2:1
    out = preprocess_image(Image.fromarray(img), 150, "pad")
    # scale 0.5; the 300x200 image becomes 150x100, padded by 25 rows above and below
    y0, y1, x0, x1 = bright_box(out)
    assert (y0, y1, x0, x1) == (25 + 20, 25 + 60, 30, 110)
    assert (out[:25] == 0).all() and (out[125:] == 0).all()


def test_pad_of_a_whole_white_portrait_image_is_a_centred_band() -> None:
    out = preprocess_image(Image.fromarray(np.full((100, 25), 255, np.uint8)), 40, "pad")
    assert out.shape == (40, 40) and out.dtype == np.uint8
    cols = np.nonzero(out.max(axis=0))[0]
    assert (cols.min(), cols.max() + 1) == (15, 25)  # 10 wide = 40 * 25 / 100, centred
    assert (out[:, 15:25] == 255).all()


def test_crop_takes_the_centre_square() -> None:
    img = np.zeros((100, 200), np.uint8)
    img[:, :50] = 255  # left quarter: outside the centre square (columns 50..150)
    img[:, 75:125] = 255  # centre band: columns 25..75 of the square
    out = preprocess_image(Image.fromarray(img), 100, "crop")
    assert out.shape == (100, 100)
    assert (out[:, :20] < 10).all() and (out[:, 80:] < 10).all()
    assert (out[:, 27:73] == 255).all()


@pytest.mark.parametrize("shape", [(1, 300), (300, 1), (7, 5), (512, 512)])
def test_odd_sizes_give_the_exact_output_size(shape: tuple[int, int]) -> None:
    for mode in ("pad", "crop"):
        out = preprocess_image(Image.fromarray(np.full(shape, 90, np.uint8)), 227, mode)
        assert out.shape == (227, 227) and out.dtype == np.uint8


def test_not_an_image_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    with pytest.raises(ImageDecodeError, match="notes.png: cannot be decoded"):
        preprocess_image(bad, 32)
    good = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(ImageDecodeError, match="cut.png"):
        preprocess_image(good, 32)
    with pytest.raises(FileNotFoundError):
        preprocess_image(tmp_path / "missing.png", 32)
    with pytest.raises(ValueError, match="mode must be"):
        preprocess_image(Image.new("L", (4, 4)), 4, "stretch")

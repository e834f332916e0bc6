"""Opening images: every mode becomes 8-bit RGB; missing, truncated, corrupt and oversized files are refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pgmm_data.images import BadImage, check_header, open_rgb, to_rgb
from pgmm_data.testing import photo, write_image

LIMIT = 10_000_000


def _save(tmp_path, image, name, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return str(path)


def test_rgb_jpeg_decodes_to_the_same_pixels_as_pil(tmp_path):
    path = _save(tmp_path, photo(0, (48, 32)), "a.jpg", quality=90)
    image = open_rgb(path, LIMIT)
    assert image.mode == "RGB" and image.size == (48, 32)
    assert image.tobytes() == Image.open(path).convert("RGB").tobytes()  # LAVIS: Image.open(p).convert("RGB")


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path):
    path = _save(tmp_path, photo(4, (40, 30)), "gray.jpg")  # skimage's camera is grayscale
    assert Image.open(path).mode == "L"
    pixels = np.asarray(open_rgb(path, LIMIT))
    assert pixels.shape == (30, 40, 3)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_cmyk_jpeg_becomes_rgb_close_to_the_original(tmp_path):
    original = photo(2, (40, 30)).convert("RGB")
    path = _save(tmp_path, original.convert("CMYK"), "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    out = np.asarray(open_rgb(path, LIMIT), dtype=np.int16)
    assert out.shape == (30, 40, 3)
    assert np.abs(out - np.asarray(original, dtype=np.int16)).mean() < 8


def test_transparent_pixels_become_white_and_opaque_ones_keep_their_colour(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[:4, :, 3] = 0  # top half fully transparent (its hidden colour must not leak through)
    rgba[4:, :, 3] = 255
    path = _save(tmp_path, Image.fromarray(rgba, "RGBA"), "alpha.png")
    out = np.asarray(open_rgb(path, LIMIT))
    assert (out[:4] == 255).all()
    assert (out[4:] == (10, 200, 30)).all()


def test_palette_image_with_transparency_is_composited(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 250, 0, 0] + [0] * 762)
    image.info["transparency"] = 1
    path = _save(tmp_path, image, "p.png", transparency=1)
    assert (np.asarray(open_rgb(path, LIMIT)) == 255).all()


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 0x00FF, 0x8080, 0xFFFF]], dtype=np.uint16)
    path = _save(tmp_path, Image.fromarray(values), "deep.png")
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(open_rgb(path, LIMIT))[0, :, 0]
    assert out.tolist() == [0, 0, 0x80, 0xFF]  # PIL's convert("RGB") would give [0, 255, 255, 255]


def test_other_modes_are_converted():
    for mode in ("1", "L", "P", "RGBA", "LA", "CMYK", "YCbCr", "I", "F", "I;16"):
        image = Image.new(mode, (3, 2))
        assert to_rgb(image).mode == "RGB", mode


@pytest.mark.parametrize("kind,expected", [
    ("missing", "file not found"),
    ("truncated", "truncated"),
    ("corrupt", "not an image file"),
])
def test_broken_files_raise_bad_image_with_a_reason(tmp_path, kind, expected):
    path = tmp_path / "x.jpg"
    write_image(path, 0, (64, 48), broken=kind)
    with pytest.raises(BadImage, match=expected) as info:
        open_rgb(str(path), LIMIT)
    assert info.value.kind == ("missing" if kind == "missing" else "unreadable")


def test_empty_file_and_directory_are_bad(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadImage, match="empty file"):
        open_rgb(str(tmp_path / "empty.jpg"), LIMIT)
    with pytest.raises(BadImage, match="directory"):
        open_rgb(str(tmp_path), LIMIT)


def test_header_check_is_fast_but_misses_truncation(tmp_path):
    path = tmp_path / "t.jpg"
    write_image(path, 0, (64, 48), broken="truncated")
    check_header(str(path), LIMIT)  # the header is intact
    with pytest.raises(BadImage):
        open_rgb(str(path), LIMIT)


def test_images_above_max_pixels_are_refused_before_decoding(tmp_path):
    path = _save(tmp_path, photo(0, (200, 100)), "big.jpg")
    with pytest.raises(BadImage, match="more than max_image_pixels 19,999") as info:
        open_rgb(path, 19_999)
    assert info.value.kind == "too_large"
    assert open_rgb(path, 20_000).size == (200, 100)


def test_pil_decompression_bomb_error_is_a_bad_image(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    Image.new("L", (100, 100)).save(buffer, format="PNG")
    (tmp_path / "bomb.png").write_bytes(buffer.getvalue())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above twice its limit
    with pytest.raises(BadImage, match="decompression bomb") as info:
        open_rgb(str(tmp_path / "bomb.png"), 10**9)
    assert info.value.kind == "too_large"

"""decode_image: §2's rescale + centre crop, every mode to RGB, bad files rejected."""
import numpy as np
import pytest
from PIL import Image

from netspec.data.decode import UnreadableImage, decode_image, is_image_name

from .imagefiles import save


def test_square_png_of_base_size_is_unchanged(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    path = save(tmp_path / "a.png", pixels)
    assert np.array_equal(decode_image(path, 24), pixels)


def test_wide_image_keeps_its_central_square(tmp_path):
    # 3 blocks of 16×16: red | green | blue. Shorter side 16 -> base 16: only green is left.
    pixels = np.zeros((16, 48, 3), dtype=np.uint8)
    pixels[:, :16, 0] = pixels[:, 16:32, 1] = pixels[:, 32:, 2] = 200
    out = decode_image(save(tmp_path / "wide.png", pixels), 16)
    assert np.array_equal(out, pixels[:, 16:32])


def test_tall_image_keeps_its_central_square_after_rescale(tmp_path):
    # 20 wide, 60 tall: rows 20..39 are the centre. Rescaled to base 10 (factor 1/2) the
    # output is the centre square averaged 2×2; flat colours make that exact.
    pixels = np.zeros((60, 20, 3), dtype=np.uint8)
    pixels[:20] = (255, 0, 0)
    pixels[20:40] = (0, 90, 0)
    pixels[40:] = (0, 0, 255)
    out = decode_image(save(tmp_path / "tall.png", pixels), 10)
    assert out.shape == (10, 10, 3)
    # Bilinear downscaling reaches one source pixel over the border at most: the inner rows
    # are pure green.
    assert np.array_equal(out[1:-1], np.broadcast_to([0, 90, 0], (8, 10, 3)))


def test_upscales_small_images(tmp_path):
    out = decode_image(save(tmp_path / "dot.png", np.full((1, 1, 3), 77, np.uint8)), 32)
    assert out.shape == (32, 32, 3) and np.all(out == 77)


def test_panorama_4000x20(tmp_path):
    # Left half red, right half blue: the central 20×20 square is half of each.
    pixels = np.zeros((20, 4000, 3), dtype=np.uint8)
    pixels[:, :2000] = (250, 0, 0)
    pixels[:, 2000:] = (0, 0, 250)
    out = decode_image(save(tmp_path / "pano.jpg", pixels, quality=95), 64).astype(int)
    assert out.shape == (64, 64, 3)
    assert np.all(np.abs(out[:, :28] - [250, 0, 0]).max(axis=-1) < 30)
    assert np.all(np.abs(out[:, 36:] - [0, 0, 250]).max(axis=-1) < 30)


def test_large_jpeg_uses_reduced_decoding_and_matches_full_decoding(tmp_path):
    # A smooth 2048×1536 image: DCT-scaled decoding at 1/8 must still give the same picture.
    y, x = np.mgrid[0:1536, 0:2048]
    pixels = np.stack([x / 8, y / 6, (x + y) / 14], axis=-1).astype(np.uint8)
    path = save(tmp_path / "big.jpg", pixels, quality=95)
    out = decode_image(path, 64).astype(float)
    with Image.open(path) as img:
        full = img.convert("RGB")
        side = 1536
        left = (2048 - side) // 2
        expected = np.asarray(full.crop((left, 0, left + side, side)).resize((64, 64), Image.BOX),
                              dtype=float)
    assert np.abs(out - expected).mean() < 2.0


@pytest.mark.parametrize("mode, value, expected", [
    ("L", 77, (77, 77, 77)),
    ("RGBA", (10, 20, 30, 0), (10, 20, 30)),
    ("LA", (99, 128), (99, 99, 99)),
    ("1", 1, (255, 255, 255)),
])
def test_modes_become_rgb(tmp_path, mode, value, expected):
    path = tmp_path / f"{mode}.png"
    Image.new(mode, (8, 5), value).save(path)
    out = decode_image(path, 6)
    assert np.array_equal(out, np.broadcast_to(expected, (6, 6, 3)))


def test_palette_image_becomes_its_palette_colours(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([12, 34, 56] + [200, 100, 0] * 255)
    img.save(tmp_path / "p.png")
    assert np.array_equal(decode_image(tmp_path / "p.png", 4),
                          np.broadcast_to((12, 34, 56), (4, 4, 3)))


def test_16_bit_grey_png_is_scaled_to_8_bits(tmp_path):
    img = Image.fromarray(np.full((6, 6), 40000, dtype=np.uint16))
    assert img.mode == "I;16"
    img.save(tmp_path / "deep.png")
    out = decode_image(tmp_path / "deep.png", 6)
    assert np.all(out == round(40000 * 255 / 65535))


def test_cmyk_jpeg(tmp_path):
    # With K = 0, RGB = 255 - CMY.
    Image.new("CMYK", (16, 16), (10, 200, 30, 0)).save(tmp_path / "c.jpg", quality=95)
    with Image.open(tmp_path / "c.jpg") as img:
        assert img.mode == "CMYK"
    out = decode_image(tmp_path / "c.jpg", 8).astype(int)
    assert np.abs(out - [245, 55, 225]).max() <= 3


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide × 20 tall with "rotate 90°" (6): shown upright it is 20 wide × 40 tall.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = decode_image(tmp_path / "rot.jpg", 20).astype(int)
    # Upright, the red half is on top and blue below; the centre square straddles both.
    assert out[2, 10, 0] > 200 and out[-3, 10, 2] > 200


def test_truncated_jpeg_is_unreadable(tmp_path):
    rng = np.random.default_rng(0)
    path = save(tmp_path / "t.jpg", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(UnreadableImage, match="truncated"):
        decode_image(path, 16)


@pytest.mark.parametrize("content", [b"hello, not an image\n", b"", b"\xff\xd8\xff\xe0garbage"])
def test_non_images_are_unreadable(tmp_path, content):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(UnreadableImage):
        decode_image(path, 16)


def test_extensions_in_any_case():
    assert all(is_image_name(n) for n in ["a.jpg", "b.JPEG", "c.Png", "d.jPg"])
    assert not any(is_image_name(n) for n in ["a.gif", "b.txt", "jpg", "c.jpg.bak"])

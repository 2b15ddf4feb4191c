"""load_image() turns every odd image into displayed RGB; discover() finds inputs safely."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pnpseg.errors import ImageError, PnpsegError
from pnpseg.io.images import IMAGE_SUFFIXES, InputItem, Skipped, discover, load_image


def _rgb(path: Path) -> tuple[Image.Image, np.ndarray]:
    im = load_image(path)
    assert im.mode == "RGB"
    return im, np.asarray(im)


# ---------------------------------------------------------------- load_image: odd kinds


def test_grayscale_and_bilevel(tmp_path: Path) -> None:
    arr = np.array([[0, 100, 255]], dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "g.png")
    im, px = _rgb(tmp_path / "g.png")
    assert im.size == (3, 1)
    assert px[0].tolist() == [[0, 0, 0], [100, 100, 100], [255, 255, 255]]

    Image.fromarray(arr > 128).convert("1").save(tmp_path / "b.bmp")
    _, px = _rgb(tmp_path / "b.bmp")
    assert px[0, 0].tolist() == [0, 0, 0] and px[0, 2].tolist() == [255, 255, 255]


def test_rgba_transparent_pixel_becomes_white(tmp_path: Path) -> None:
    arr = np.zeros((2, 2, 4), dtype=np.uint8)
    arr[0, 0] = (255, 0, 0, 255)  # opaque red
    arr[0, 1] = (0, 0, 255, 0)  # fully transparent blue
    arr[1, 0] = (0, 0, 0, 128)  # half-transparent black
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    _, px = _rgb(tmp_path / "a.png")
    assert px[0, 0].tolist() == [255, 0, 0]
    assert px[0, 1].tolist() == [255, 255, 255]
    assert all(120 <= v <= 135 for v in px[1, 0])


def test_grayscale_alpha(tmp_path: Path) -> None:
    Image.fromarray(np.array([[[50, 255], [50, 0]]], dtype=np.uint8), "LA").save(tmp_path / "la.png")
    _, px = _rgb(tmp_path / "la.png")
    assert px[0, 0].tolist() == [50, 50, 50] and px[0, 1].tolist() == [255, 255, 255]


def test_palette_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (2, 1))
    im.putpalette([0, 200, 0, 10, 20, 30] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png", transparency=0)
    _, px = _rgb(tmp_path / "p.png")
    assert px[0, 0].tolist() == [255, 255, 255]  # transparent index -> white
    assert px[0, 1].tolist() == [10, 20, 30]


def test_16bit_png_scaled_by_bit_depth(tmp_path: Path) -> None:
    arr = np.array([[65535, 32768, 0, 257]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    _, px = _rgb(tmp_path / "d.png")
    assert px[0, :, 0].tolist()[0] == 255
    assert abs(int(px[0, 1, 0]) - 128) <= 1
    assert px[0, 2].tolist() == [0, 0, 0] and px[0, 3, 0] == 1


def test_float_image_min_max(tmp_path: Path) -> None:
    arr = np.array([[-1.0, 0.0, 3.0]], dtype=np.float32)
    Image.fromarray(arr, "F").save(tmp_path / "f.tif")
    _, px = _rgb(tmp_path / "f.tif")
    assert px[0, :, 0].tolist() == [0, 64, 255]


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red ink
    im, px = _rgb(tmp_path / "c.jpg")
    assert im.size == (8, 6)
    r, g, b = px[3, 4].tolist()
    assert r > 200 and g < 60 and b < 60


def test_ycbcr(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), (0, 0, 255)).convert("YCbCr").save(tmp_path / "y.jpg")
    _, px = _rgb(tmp_path / "y.jpg")
    r, g, b = px[1, 1].tolist()
    assert b > 200 and r < 60 and g < 60


def test_exif_orientation_6_rotates(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high, red block at the stored top-left corner.
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:8, :8] = (255, 0, 0)
    stored = Image.fromarray(arr)
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored.save(tmp_path / "r.jpg", exif=exif, quality=95)
    im, px = _rgb(tmp_path / "r.jpg")
    assert im.size == (20, 40)  # width and height swapped
    # Rotating 90 degrees clockwise moves the top-left corner to the top-right.
    assert px[2, 17, 0] > 200 and px[2, 2, 0] < 50
    assert px[37, 2, 0] < 50


@pytest.mark.parametrize("size", [(1, 1), (3, 5)])
def test_tiny_images(tmp_path: Path, size: tuple[int, int]) -> None:
    Image.new("RGB", size, (1, 2, 3)).save(tmp_path / "t.png")
    im, px = _rgb(tmp_path / "t.png")
    assert im.size == size and px[0, 0].tolist() == [1, 2, 3]


def test_large_image(tmp_path: Path) -> None:
    Image.new("RGB", (4000, 3000), (9, 9, 9)).save(tmp_path / "big.png", compress_level=1)
    im = load_image(tmp_path / "big.png")
    assert im.size == (4000, 3000) and im.getpixel((3999, 2999)) == (9, 9, 9)


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 4), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(tmp_path / "a.gif").n_frames == 3
    im, px = _rgb(tmp_path / "a.gif")
    assert im.size == (6, 4)
    r, g, b = px[2, 3].tolist()
    assert r > 200 and g < 50 and b < 50


def test_result_is_detached_from_file(tmp_path: Path) -> None:
    Image.new("RGB", (3, 3), (5, 6, 7)).save(tmp_path / "x.png")
    im = load_image(tmp_path / "x.png")
    (tmp_path / "x.png").unlink()
    assert im.getpixel((1, 1)) == (5, 6, 7)


# ---------------------------------------------------------------- load_image: failures


def _assert_image_error(path: Path, *reason_words: str) -> None:
    with pytest.raises(ImageError) as info:
        load_image(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__
    for word in reason_words:
        assert word in msg


def _jpeg_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.jpg").write_bytes(b"")
    _assert_image_error(tmp_path / "e.jpg", "empty")


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = _jpeg_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    _assert_image_error(tmp_path / "t.jpg", "truncated")


def test_truncated_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    _assert_image_error(tmp_path / "t.png")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("hello, not an image\n")
    _assert_image_error(tmp_path / "notes.jpg", "not a recognised image")


def test_directory_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").mkdir()
    _assert_image_error(tmp_path / "x.jpg", "directory")


def test_missing_file(tmp_path: Path) -> None:
    _assert_image_error(tmp_path / "gone.png", "not found")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX non-root")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    Image.new("RGB", (2, 2)).save(path)
    path.chmod(0)
    try:
        _assert_image_error(path, "permission")
    finally:
        path.chmod(0o644)


def test_permission_error_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Same mapping as the chmod test above, but also runs as root (where chmod 0 is readable).
    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    (tmp_path / "x.png").write_bytes(b"")  # load_image reads the bytes, then PIL opens them
    monkeypatch.setattr(Image, "open", deny)
    _assert_image_error(tmp_path / "x.png", "permission denied")


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10000 > 2 * limit -> error
    _assert_image_error(tmp_path / "bomb.png", "too large")


# ---------------------------------------------------------------- discover


def _touch_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2)).save(path, format="PNG")
    return path


def test_suffixes_cover_common_formats() -> None:
    for s in [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"]:
        assert s in IMAGE_SUFFIXES


def test_discover_recursive_sorted_with_skips(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ["b.png", "a.JPG", "sub/z.jpeg", "sub/deeper/c.webp", "A2.tif"]:
        _touch_image(root / rel)
    (root / "readme.txt").write_text("x")
    (root / "sub" / "data.csv").write_text("x")
    (root / ".DS_Store").write_bytes(b"x")
    _touch_image(root / ".hidden.png")
    _touch_image(root / ".git" / "objects" / "o.png")
    _touch_image(root / "sub" / ".cache" / "thumb.jpg")

    items, skipped = discover([root])
    rels = [i.relative.as_posix() for i in items]
    assert rels == ["A2.tif", "a.JPG", "b.png", "sub/deeper/c.webp", "sub/z.jpeg"]
    assert all(i.path == root / i.relative for i in items)
    assert [s.path for s in skipped] == [root / "readme.txt", root / "sub" / "data.csv"]
    assert discover([root]) == (items, skipped)  # deterministic
    assert items[3].output_relative() == Path("sub/deeper/c.png")


def test_discover_files_and_folders_keep_order(tmp_path: Path) -> None:
    f = _touch_image(tmp_path / "one" / "single.bmp")
    _touch_image(tmp_path / "dir" / "x.png")
    (tmp_path / "doc.pdf").write_text("x")
    items, skipped = discover([f, tmp_path / "dir", tmp_path / "doc.pdf"])
    assert items == [
        InputItem(f, Path("single.bmp")),
        InputItem(tmp_path / "dir" / "x.png", Path("x.png")),
    ]
    assert skipped == [Skipped(tmp_path / "doc.pdf", "not an image file")]


def test_discover_same_file_twice_kept_once(tmp_path: Path) -> None:
    f = _touch_image(tmp_path / "d" / "x.png")
    items, _ = discover([tmp_path / "d", f, f])
    assert [i.path for i in items] == [f]


def test_discover_missing_input(tmp_path: Path) -> None:
    _touch_image(tmp_path / "ok.png")
    with pytest.raises(PnpsegError, match="nope"):
        discover([tmp_path / "ok.png", tmp_path / "nope"])


def test_discover_clash_between_files(tmp_path: Path) -> None:
    a = _touch_image(tmp_path / "a" / "x.jpg")
    b = _touch_image(tmp_path / "b" / "x.jpg")
    with pytest.raises(PnpsegError) as info:
        discover([a, b])
    assert str(a) in str(info.value) and str(b) in str(info.value)


def test_discover_clash_same_stem_in_folder(tmp_path: Path) -> None:
    _touch_image(tmp_path / "d" / "x.jpg")
    _touch_image(tmp_path / "d" / "x.png")
    _touch_image(tmp_path / "d" / "y.png")
    with pytest.raises(PnpsegError, match="clash") as info:
        discover([tmp_path / "d"])
    assert "x.jpg" in str(info.value) and "y.png" not in str(info.value)


def test_discover_no_clash_in_different_subfolders(tmp_path: Path) -> None:
    _touch_image(tmp_path / "d" / "a" / "x.jpg")
    _touch_image(tmp_path / "d" / "b" / "x.jpg")
    items, _ = discover([tmp_path / "d"])
    assert len(items) == 2

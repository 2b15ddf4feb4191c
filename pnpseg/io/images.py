"""Finding input images and decoding them into plain RGB, whatever odd form they come in.

The pipeline only ever sees ``PIL.Image`` objects in mode ``RGB`` with the orientation a
viewer would show. Everything that can go wrong with a file on disk is turned into a
one-line :class:`~pnpseg.errors.ImageError` here, so the CLI can report it and move on.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pnpseg.errors import ImageError, PnpsegError

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".apng",
        ".bmp",
        ".dib",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".tga",
        ".ico",
    }
)


#: The record field (and ``Image.info`` key of a decoded input) holding the SHA-256 of the
#: input's bytes: resume compares it with the input's current content.
INPUT_DIGEST = "input_sha256"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """:func:`sha256` of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_image_name(path: Path) -> bool:
    """True if the file suffix (any case) is one we try to decode."""
    return path.suffix.lower() in IMAGE_SUFFIXES


@dataclass(frozen=True)
class InputItem:
    """One image to process: where it is, and where it sits relative to its input root.

    ``relative`` mirrors the input layout under the output folder; it keeps the original
    suffix (``a/x.jpg``), use :meth:`output_relative` for the output name.
    """

    path: Path
    relative: Path

    def output_relative(self, suffix: str = ".png") -> Path:
        """The relative output path: ``a/x.jpg`` -> ``a/x.png``."""
        return self.relative.with_suffix(suffix)


@dataclass(frozen=True)
class Skipped:
    """A path discovery passed over, and why. ``unreadable``: it may hold an image we could
    not reach (an unlistable folder, a broken or looping symlink), so the run counts it as a
    failed input; otherwise it is simply not an image (or a folder already walked)."""

    path: Path
    reason: str
    unreadable: bool = False


NOT_AN_IMAGE = "not an image file"


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _dead_link(path: Path) -> Skipped | None:
    """A symlink that leads nowhere: broken, or a loop (``os.stat`` fails with ELOOP)."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as error:
        return Skipped(path, "symlink loop" if error.errno == errno.ELOOP else "broken symlink", True)
    return None


def _walk(root: Path, exclude: frozenset[Path]) -> tuple[list[InputItem], list[Skipped]]:
    """Walk ``root``, following folder symlinks but entering each real folder once, never
    entering a folder in ``exclude`` nor listing a file in it."""
    items: list[InputItem] = []
    skipped: list[Skipped] = []

    def unlistable(error: OSError) -> None:
        skipped.append(Skipped(Path(error.filename), f"cannot list folder ({error.strerror or error})", True))

    walked: dict[tuple[int, int], Path] = {}
    holds_excluded = {path.parent for path in exclude}
    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable, followlinks=True):
        here = Path(dirpath)
        real = here.resolve() if holds_excluded else here
        if here == root:
            walked[_identity(root)] = root
        kept = []
        for name in sorted(d for d in dirnames if not _hidden(d)):  # prune .git etc.
            folder = here / name
            if folder.resolve() in exclude:  # the output folder
                continue
            first = walked.setdefault(_identity(folder), folder)
            if first == folder:
                kept.append(name)
            elif first in folder.parents:
                skipped.append(Skipped(folder, f"symlink loop (back to {first})"))
            else:
                skipped.append(Skipped(folder, f"same folder as {first}, walked once"))
        dirnames[:] = kept
        for name in sorted(filenames):
            if _hidden(name) or (real in holds_excluded and real / name in exclude):
                continue
            path = here / name
            dead = _dead_link(path)
            if dead is not None:
                skipped.append(dead)
            elif is_image_name(path):
                items.append(InputItem(path, path.relative_to(root)))
            else:
                skipped.append(Skipped(path, NOT_AN_IMAGE))
    items.sort(key=lambda item: item.relative.parts)
    skipped.sort(key=lambda s: s.path.relative_to(root).parts)
    return items, skipped


def _identity(folder: Path) -> tuple[int, int]:
    stat = folder.stat()
    return stat.st_dev, stat.st_ino


def _under_root(path: Path, root: Path) -> Path:
    """``path`` relative to ``root``, both made absolute without resolving links (``..`` never survives)."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    except ValueError:
        raise PnpsegError(f"input {path} is not inside --root {root}; pass a --root that holds every input") from None


def discover(
    inputs: Sequence[Path], exclude: Sequence[str | Path] = (), root: Path | None = None
) -> tuple[list[InputItem], list[Skipped]]:
    """Expand files and folders into the images to process, plus the paths skipped.

    Folders are walked recursively in sorted order; hidden files and folders (``.DS_Store``,
    ``.git``) inside them are ignored silently. Symlinked folders are followed, each real
    folder once: a link back to an ancestor (a loop) or a second link to a folder already
    walked is skipped with a note. Every other path passed over is returned as
    :class:`Skipped` with its reason: non-image files, folders that cannot be listed, and
    broken or looping symlinks (the last two ``unreadable``). A file given directly keeps
    its name as ``relative`` (even if hidden) but is still skipped if its suffix is not an
    image suffix. Inputs keep their command-line order; the same file reached twice is kept
    once. Folders in ``exclude`` (the output folder, when it lies inside an input folder)
    are not walked, and files in it (what pnpseg wrote, when the output folder is an input
    folder) are passed over silently.

    With ``root``, every output name is the image's path relative to ``root`` (``root/a/x.jpg``
    given as a file, or found in folder ``root/a``, is ``a/x.jpg``), so same-named files in
    different folders keep apart; an input outside ``root`` is refused.

    Raises :class:`PnpsegError` if an input does not exist, or if two images would write
    the same output (``a/x.jpg`` + ``b/x.jpg`` given as files, or ``x.jpg`` + ``x.png`` in
    one folder). The comparison ignores suffix and letter case, since outputs all get the
    same suffix and may land on a case-insensitive file system.
    """
    items: list[InputItem] = []
    skipped: list[Skipped] = []
    excluded = _resolve_all(exclude)
    if root is not None and not Path(root).is_dir():
        raise PnpsegError(f"--root must be a folder: {root}")
    for raw in inputs:
        path = Path(raw)
        base = _under_root(path, root) if root is not None else None
        if path.is_dir():
            found, skip = _walk(path, excluded)
            items += found if base is None else [InputItem(i.path, base / i.relative) for i in found]
            skipped += skip
        elif path.is_file():
            if is_image_name(path):
                items.append(InputItem(path, Path(path.name) if base is None else base))
            else:
                skipped.append(Skipped(path, NOT_AN_IMAGE))
        elif path.exists() or path.is_symlink():
            raise PnpsegError(f"input is neither a file nor a folder: {path}")
        else:
            raise PnpsegError(f"input not found: {path}")

    unique: list[InputItem] = []
    seen_files: set[Path] = set()
    for item in items:
        real = item.path.resolve()
        if real in seen_files:
            continue
        seen_files.add(real)
        unique.append(item)
    check_output_clashes(unique)
    return unique, skipped


def _resolve_all(paths: Sequence[str | Path]) -> frozenset[Path]:
    """Resolved ``paths``, each folder resolved once (an output folder may list a million files)."""
    folders: dict[Path, Path] = {}
    resolved = set()
    for raw in paths:
        path = Path(raw)
        if path.is_symlink() or path.name in ("", ".", ".."):
            resolved.add(path.resolve())
            continue
        if path.parent not in folders:
            folders[path.parent] = path.parent.resolve()
        resolved.add(folders[path.parent] / path.name)
    return frozenset(resolved)


def check_output_clashes(items: Sequence[InputItem]) -> None:
    """Refuse inputs that would write the same output file (suffix and letter case ignored)."""
    by_output: dict[str, list[InputItem]] = {}
    for item in items:
        by_output.setdefault(item.relative.with_suffix("").as_posix().casefold(), []).append(item)
    clashes = [group for group in by_output.values() if len(group) > 1]
    if clashes:
        shown = "; ".join(" and ".join(str(i.path) for i in group) for group in clashes[:5])
        more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
        raise PnpsegError(
            f"{len(clashes)} output name clash(es), these inputs would write the same "
            f"output file: {shown}{more}; rename them or process them separately"
        )


def _scale_to_u8(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    scaled = (arr.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit grayscale -> 8-bit. PIL's own convert clips instead of scaling."""
    arr = np.asarray(im)
    if im.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        return Image.fromarray(_scale_to_u8(arr, float(arr.min()), float(arr.max())))
    if im.mode.startswith("I;16") or (arr.size and arr.min() >= 0 and arr.max() <= 65535):
        return Image.fromarray(_scale_to_u8(arr, 0.0, 65535.0))  # 16-bit data: 65535 -> 255
    return Image.fromarray(_scale_to_u8(arr, float(arr.min()), float(arr.max())))


def _to_srgb(im: Image.Image) -> Image.Image | None:
    """Apply an embedded ICC profile (Adobe RGB, Display P3, CMYK...) if littlecms can."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "CMYK"):
        return None
    try:
        import io

        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # no littlecms, or a broken profile: plain conversion is fine
        return None


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited onto white."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        im = _high_depth_to_l(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode == "RGB":
        return _to_srgb(im) or im
    if im.mode == "CMYK":
        return _to_srgb(im) or im.convert("RGB")
    return im.convert("RGB")  # 1, L, P, YCbCr, RGBX, ...


def set_max_image_pixels(limit: int | None) -> None:
    """Refuse images of more than ``limit`` pixels (0: no limit; None: PIL's default, ~89 MP).

    The limit is PIL's process-wide decompression-bomb guard, so it holds in every thread;
    :func:`load_image` applies it exactly (PIL itself only warns up to twice the limit).
    """
    if limit is not None and limit < 0:
        raise PnpsegError(f"--max-image-pixels must be ≥ 0 (0: no limit), got {limit}")
    if limit is not None:
        Image.MAX_IMAGE_PIXELS = limit or None
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # refused below instead


def _check_pixels(im: Image.Image) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit and im.width * im.height > limit:
        raise Image.DecompressionBombError(f"{im.width}×{im.height} = {im.width * im.height} pixels, limit {limit}")


def _reason(exc: BaseException, path: Path | None = None, empty: bool = False) -> str:
    """One line for a failed read (``path``: the file that was read) or decode."""
    if isinstance(exc, Image.DecompressionBombError):
        return f"image too large ({exc}); raise the limit with --max-image-pixels N (0: no limit)"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError) or (path is not None and path.is_dir()):
        return "is a directory, not an image file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, UnidentifiedImageError):
        return "empty file" if empty else "not a recognised image format"
    msg = " ".join(str(exc).split())
    if "truncated" in msg.lower() or isinstance(exc, EOFError):
        return "truncated or corrupt image data"
    return (
        f"cannot decode image ({type(exc).__name__}: {msg[:200]})"
        if msg
        else (f"cannot decode image ({type(exc).__name__})")
    )


def load_image(path: Path) -> Image.Image:
    """Read ``path`` as the RGB image a viewer would display.

    EXIF orientation is applied; grayscale, palette, CMYK, YCbCr become RGB; alpha is
    composited onto white; 16-bit grayscale is scaled by its bit depth (65535 -> 255), float
    images min-max. Animated files give their first frame. Pixels are decoded here so a
    truncated file fails now, as ``ImageError("<path>: <reason>")`` on one line. The file is
    read once; the SHA-256 of those bytes is ``info[INPUT_DIGEST]`` of the image returned, so
    the record names exactly the content that was labelled.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except Exception as exc:
        raise ImageError(path, _reason(exc, path)) from None
    return decode_image(data, path)


def decode_image(data: bytes, name: str | Path) -> Image.Image:
    """:func:`load_image` for bytes already in memory (an object store's, a download's):
    the same decoding, pixel limit and digest, with ``name`` in the error; no temp file."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            _check_pixels(im)
            im.load()
            try:
                oriented = ImageOps.exif_transpose(im)
            except Exception:  # malformed EXIF should not reject good pixels
                oriented = im
            rgb = to_rgb(oriented)
            rgb.load()
            result = rgb if rgb is not im else im.copy()
            result.info[INPUT_DIGEST] = sha256(data)
            return result
    except ImageError:
        raise
    except Exception as exc:  # PIL raises many types for bad data (SyntaxError, struct.error...)
        raise ImageError(name, _reason(exc, empty=not data)) from None

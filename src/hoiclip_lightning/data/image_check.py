"""Check image files at set-up: readable, complete, and of the size their record says; remembered between runs.

Three levels (``verify_images``):

* ``header`` (default): the header must be readable (the format is recognised and gives a size). JPEG and
  PNG files must also end with their end marker (``FF D9``; the ``IEND`` chunk): a file cut short misses
  it. A file that does not end with it (a truncated one, or a valid one followed by extra bytes, as some
  phones write) is decoded in full to decide, so a valid file is never refused. Damage inside the
  compressed data of a complete file is only found by ``full``.
* ``full``: every file is decoded in full (as training will).
* ``none``: only the header is read, and only when the record gives no size (the behaviour before the
  checks existed).

A passed check is remembered in a small JSON cache keyed by the file's absolute path, size and modification
time, so a second run over the same files opens none of them (a changed file is checked again). A ``full``
entry also answers a ``header`` question. Failures are not remembered: a bad file is reported on every run
until it is fixed.

Examples:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image, UnidentifiedImageError
    >>> folder = Path(tempfile.mkdtemp())
    >>> Image.effect_noise((64, 48), 60).convert("RGB").save(folder / "a.jpg")
    >>> data = (folder / "a.jpg").read_bytes()
    >>> _ = (folder / "cut.jpg").write_bytes(data[: len(data) // 2])   # a download cut short
    >>> checker = ImageChecker("header")
    >>> checker.check(folder / "a.jpg")
    (64, 48)
    >>> try:
    ...     checker.check(folder / "cut.jpg")
    ... except ImageCheckError as err:
    ...     print(str(err)[:50])
    cannot decode the image (OSError: image file is tr
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

VerifyImages = Literal["header", "full", "none"]
VERIFY_IMAGES: tuple[str, ...] = ("header", "full", "none")
_LEVEL = {"header": 1, "full": 2}
_CACHE_VERSION = 1
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


class ImageCheckError(Exception):
    """An image file failed its check (the message says why; callers add the file, record and field)."""


def default_cache_dir() -> Path:
    """Where check caches live by default: ``$HOICLIP_CACHE_DIR``, else ``$XDG_CACHE_HOME/hoiclip_lightning``,
    else ``~/.cache/hoiclip_lightning`` (never inside a dataset, so a read-only dataset root works)."""
    env = os.environ.get("HOICLIP_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hoiclip_lightning"


def cache_file_for(root: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The cache file of a dataset root: ``<cache_dir>/image_checks/<root name>-<hash of its path>.json``."""
    resolved = Path(root).resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / "image_checks" / f"{resolved.name or 'root'}-{digest}.json"


def _ends_with_marker(path: Path, fmt: str | None) -> bool:
    """Whether a JPEG / PNG file ends with its end marker (other formats: True, nothing cheap to check)."""
    marker = {"JPEG": _JPEG_END, "MPO": _JPEG_END, "PNG": _PNG_END}.get(fmt or "")
    if marker is None:
        return True
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() < len(marker):
            return False
        fh.seek(-len(marker), os.SEEK_END)
        return fh.read() == marker


def inspect_image(path: str | Path, mode: Literal["header", "full"] = "header") -> tuple[int, int]:
    """Check one image file; ``(width, height)`` as stored (no EXIF rotation).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageCheckError: the file is not an image PIL can read, is cut short, or does not decode.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            size, fmt = img.size, img.format
    except FileNotFoundError:
        raise
    except UnidentifiedImageError:
        raise ImageCheckError("cannot read the image header (not an image format PIL recognises)") from None
    except Exception as err:  # noqa: BLE001 - PIL raises many types for broken files
        raise ImageCheckError(f"cannot read the image header ({type(err).__name__}: {err})") from None
    if mode == "full" or not _ends_with_marker(path, fmt):
        try:
            with Image.open(path) as img:
                img.load()
        except Exception as err:  # noqa: BLE001
            raise ImageCheckError(f"cannot decode the image ({type(err).__name__}: {err})") from None
    if size[0] < 1 or size[1] < 1:
        raise ImageCheckError(f"the image has no pixels ({size[0]}x{size[1]})")
    return int(size[0]), int(size[1])


class ImageChecker:
    """Checks image files at a ``verify_images`` level, remembering passed checks in a JSON file.

    Args:
        mode: ``"header"`` or ``"full"`` (see the module docstring).
        cache_file: the JSON cache (read now if it exists, written by :meth:`save`); ``None``: remember
            within this object only.

    Attributes:
        opened: files opened by this checker (cache misses).
        cached: checks answered from the cache.
    """

    def __init__(self, mode: Literal["header", "full"] = "header", cache_file: str | Path | None = None) -> None:
        if mode not in _LEVEL:
            raise ValueError(f"image check mode {mode!r} is not supported; accepted: {tuple(_LEVEL)}")
        self.mode = mode
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._entries: dict[str, list[int]] = self._read_cache()
        self._dirty = False
        self.opened = 0
        self.cached = 0

    def _read_cache(self) -> dict[str, list[int]]:
        if self.cache_file is None or not self.cache_file.is_file():
            return {}
        try:
            data = json.loads(self.cache_file.read_text())
        except (OSError, ValueError) as err:
            log.info("image check cache %s is unreadable (%s); starting a new one", self.cache_file, err)
            return {}
        if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION:
            return {}
        entries = data.get("entries")
        if not isinstance(entries, dict):
            return {}
        return {k: v for k, v in entries.items()
                if isinstance(v, list) and len(v) == 5 and all(isinstance(x, int) for x in v)}

    def check(self, path: str | Path) -> tuple[int, int]:
        """``(width, height)`` of a file that passes the check.

        Raises:
            FileNotFoundError: the file does not exist.
            ImageCheckError: the file fails the check (nothing is remembered then).
        """
        key = os.path.abspath(path)
        st = os.stat(key)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns and hit[2] >= _LEVEL[self.mode]:
            self.cached += 1
            return hit[3], hit[4]
        self.opened += 1
        width, height = inspect_image(key, self.mode)
        self._entries[key] = [st.st_size, st.st_mtime_ns, _LEVEL[self.mode], width, height]
        self._dirty = True
        return width, height

    def save(self) -> None:
        """Write the cache file (atomically) if anything new was checked; a folder that cannot be written is
        logged and ignored (the checks then simply run again next time)."""
        if self.cache_file is None or not self._dirty:
            return
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_file.parent, prefix=".image_checks-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump({"version": _CACHE_VERSION, "entries": self._entries}, fh, separators=(",", ":"))
                os.replace(tmp, self.cache_file)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as err:
            log.warning("cannot write the image check cache %s (%s); images will be checked again next run",
                        self.cache_file, err)
            return
        self._dirty = False
        log.info("image check cache: %s (%d files)", self.cache_file, len(self._entries))

"""Check an uploaded image and turn it into a compact, metadata-free copy (`StoredImage`).

Pure: Pillow and the standard library only. The type is sniffed from the bytes, never from the
Content-Type or the file name; each way an upload can be wrong raises its own `DomainError`.
Checks that need only the header run before any pixel is decoded (decompression-bomb safe).
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageFile, ImageOps

from contracts.jobs import StoredImage
from services.gateway.domain.errors import (
    AnimatedImageError,
    CorruptImageError,
    EmptyImageError,
    ImageTooSmallError,
    TooManyPixelsError,
    UnsupportedBitDepthError,
    UnsupportedColorModeError,
    UnsupportedFormatError,
    UploadTooLargeError,
)

# Sniffed name -> Pillow plugin name, for the formats we accept.
SUPPORTED_FORMATS: dict[str, str] = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
# Recognised but refused. GIF is still opened, to tell an animation from a still.
_OPENED_TO_REFUSE: dict[str, str] = {"gif": "GIF"}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"})

_COLOUR_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX"})
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16B", "I;16L", "I;16N"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


@dataclass(frozen=True)
class ImageLimits:
    """What an acceptable upload looks like and how it is re-encoded."""

    max_upload_bytes: int
    max_pixels: int
    min_side: int
    reencode_max_side: int
    jpeg_quality: int = 92


def sniff_format(data: bytes) -> str | None:
    """Name the container from its magic number ('jpeg', 'png', 'gif', 'zip', ...), else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "heif"
    if data[:4] in _ZIP_SIGNATURES:
        return "zip"
    return None


def is_zip(data: bytes) -> bool:
    """True when the bytes start like a zip archive."""
    return data[:4] in _ZIP_SIGNATURES


def prepare_image(data: bytes, limits: ImageLimits) -> StoredImage:
    """Validate an upload and return its oriented, RGB, downscaled, metadata-free re-encoding."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Some library flipped Pillow's global; truncated uploads would then pass as images.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False in the gateway")
    if not data:
        raise EmptyImageError("the upload is empty")
    if len(data) > limits.max_upload_bytes:
        raise UploadTooLargeError("the upload is larger than allowed", {"max_bytes": limits.max_upload_bytes})
    fmt = sniff_format(data[:32])
    if fmt is None:
        raise UnsupportedFormatError(
            "the bytes are not a recognised image", {"supported": sorted(SUPPORTED_FORMATS)}
        )
    plugin = SUPPORTED_FORMATS.get(fmt) or _OPENED_TO_REFUSE.get(fmt)
    if plugin is None:
        raise UnsupportedFormatError(
            f"{fmt} images are not supported", {"detected": fmt, "supported": sorted(SUPPORTED_FORMATS)}
        )
    png_bit_depth = _check_png_header(data, limits) if fmt == "png" else None

    img = _open(data, plugin)
    try:
        _check_header(img, fmt, png_bit_depth, limits)
        if fmt == "jpeg":
            # Let libjpeg decode at 1/2..1/8 scale when the result is downscaled anyway: a
            # 40-megapixel JPEG then needs ~8 MB of pixels instead of ~120 MB.
            img.draft(None, (limits.reencode_max_side, limits.reencode_max_side))
        _decode(img)
        clean = _normalise(img, limits.reencode_max_side)
    finally:
        img.close()
    return _encode(clean, "png" if fmt == "png" else "jpeg", limits.jpeg_quality)


def _check_png_header(data: bytes, limits: ImageLimits) -> int:
    """Read IHDR by hand: size and bit depth are known before Pillow sees the file."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise CorruptImageError("the PNG header is damaged")
    width, height, bit_depth = struct.unpack(">IIB", data[16:25])
    if width * height > limits.max_pixels:
        raise TooManyPixelsError(
            "the image declares more pixels than allowed",
            {"width": width, "height": height, "max_pixels": limits.max_pixels},
        )
    return int(bit_depth)


def _open(data: bytes, plugin: str) -> ImageFile.ImageFile:
    try:
        # Only the sniffed plugin may parse the bytes, so a polyglot cannot pick another decoder.
        img = Image.open(io.BytesIO(data), formats=[plugin])
    except Image.DecompressionBombError as exc:
        raise TooManyPixelsError("the image declares more pixels than allowed") from exc
    except Exception as exc:  # Pillow raises many types for malformed headers; all mean corrupt
        raise CorruptImageError("the image header could not be read") from exc
    if not isinstance(img, ImageFile.ImageFile):
        raise CorruptImageError("the image header could not be read")
    return img


def _check_header(img: Image.Image, fmt: str, png_bit_depth: int | None, limits: ImageLimits) -> None:
    width, height = img.size
    if width * height > limits.max_pixels:
        raise TooManyPixelsError(
            "the image declares more pixels than allowed",
            {"width": width, "height": height, "max_pixels": limits.max_pixels},
        )
    # An MPO is a JPEG whose extra "frames" are previews, depth or HDR gain maps (phones and
    # cameras write them): the primary image is frame 0, which is what gets decoded.
    if getattr(img, "is_animated", False) and img.format != "MPO":
        raise AnimatedImageError("animated images are not supported; send a single frame")
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedFormatError(
            f"{fmt} images are not supported", {"detected": fmt, "supported": sorted(SUPPORTED_FORMATS)}
        )
    if png_bit_depth == 16 or img.mode in _HIGH_BIT_DEPTH_MODES:
        raise UnsupportedBitDepthError(
            "only 8-bit images are supported", {"mode": img.mode, "bit_depth": png_bit_depth}
        )
    if img.mode not in _COLOUR_MODES:
        raise UnsupportedColorModeError("only RGB or greyscale images are supported", {"mode": img.mode})
    if min(width, height) < limits.min_side:
        raise ImageTooSmallError(
            "the image is too small to assess",
            {"width": width, "height": height, "min_side": limits.min_side},
        )


def _decode(img: Image.Image) -> None:
    """Decode every pixel now, so truncated or damaged data fails here and not later."""
    try:
        img.load()
    except Image.DecompressionBombError as exc:
        raise TooManyPixelsError("the image has more pixels than allowed") from exc
    except Exception as exc:  # OSError (truncated), SyntaxError, zlib.error, ValueError, ...
        raise CorruptImageError("the image data is truncated or damaged") from exc


def _normalise(img: Image.Image, max_side: int) -> Image.Image:
    """Upright, RGB, at most `max_side` px, and a fresh image object that carries no metadata."""
    try:
        upright = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF: keep the stored orientation rather than reject the photo
        upright = img
    rgb = _to_rgb(upright)
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    clean = Image.new("RGB", rgb.size)
    clean.paste(rgb)
    return clean


def _to_rgb(img: Image.Image) -> Image.Image:
    has_alpha = img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info)
    if not has_alpha:
        return img.convert("RGB") if img.mode != "RGB" else img.copy()
    # Transparent pixels become white rather than whatever colour they happen to hold.
    rgba = img.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _encode(img: Image.Image, target: str, jpeg_quality: int) -> StoredImage:
    buffer = io.BytesIO()
    media_type: Literal["image/png", "image/jpeg"]
    if target == "png":
        img.save(buffer, format="PNG", compress_level=6)
        media_type = "image/png"
    else:
        img.save(buffer, format="JPEG", quality=jpeg_quality, optimize=True)
        media_type = "image/jpeg"
    encoded = buffer.getvalue()
    return StoredImage(
        media_type=media_type,
        width=img.width,
        height=img.height,
        sha256=hashlib.sha256(encoded).hexdigest(),
        data_b64=base64.b64encode(encoded).decode("ascii"),
    )

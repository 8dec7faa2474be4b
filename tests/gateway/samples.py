"""Uploads built inside the tests: good images, every kind of bad one, and zip archives."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from PIL import Image

ORIENTATION = 0x0112
GPS_IFD = 0x8825


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    """Encode an image in memory."""
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def noisy_rgb(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A photo-like image (noise compresses poorly, like real photos)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def jpeg(size: tuple[int, int] = (120, 90), color: tuple[int, int, int] = (150, 90, 80)) -> bytes:
    """A plain, valid JPEG."""
    return encode(Image.new("RGB", size, color), "JPEG", quality=90)


def png(size: tuple[int, int] = (120, 90)) -> bytes:
    """A plain, valid PNG."""
    return encode(Image.new("RGB", size, (40, 120, 200)), "PNG")


def truncated_jpeg() -> bytes:
    """A photo-like JPEG cut in half."""
    data = encode(noisy_rgb((256, 192)), "JPEG", quality=90)
    return data[: len(data) // 2]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims `width` x `height` (8-bit RGB); its data is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def text_file() -> bytes:
    """What a notes file renamed to .jpg looks like."""
    return b"Patient notes: lesion on the left shoulder, follow up in 3 months.\n"


def animated_gif() -> bytes:
    """Three differently coloured frames."""
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def still_gif() -> bytes:
    """One frame of GIF."""
    return encode(Image.new("RGB", (64, 64), (10, 200, 10)), "GIF")


def animated_png() -> bytes:
    """An APNG with two frames."""
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:])


def cmyk_jpeg() -> bytes:
    """A print-workflow JPEG."""
    return encode(Image.new("CMYK", (64, 64), (0, 50, 100, 0)), "JPEG")


def png_16bit() -> bytes:
    """A 16-bit greyscale PNG (mode I;16)."""
    return encode(Image.new("I;16", (64, 64), 40000), "PNG")


def png_rgb_16bit(side: int = 40) -> bytes:
    """An RGB PNG with 16 bits per channel, built by hand (Pillow cannot write one)."""
    row = b"\x00" + b"\xc3\x50" * 3 * side  # filter byte, then 16-bit big-endian samples
    ihdr = struct.pack(">IIBBBBB", side, side, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(row * side))
        + _png_chunk(b"IEND", b"")
    )


def exif_rotated_jpeg_with_gps(size: tuple[int, int] = (160, 80)) -> bytes:
    """A JPEG stored `size` wide whose EXIF says "rotate 90° clockwise", carrying a GPS position."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[0x010F] = "PhoneMaker"  # Make
    gps = exif.get_ifd(GPS_IFD)
    gps[1] = "N"
    gps[2] = (52.0, 31.0, 12.0)
    gps[3] = "E"
    gps[4] = (13.0, 24.0, 36.0)
    return encode(Image.new("RGB", size, (180, 120, 100)), "JPEG", exif=exif.tobytes())


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive holding `entries` (name -> bytes); names ending in '/' are directories."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()

"""The pure upload checks and re-encoding (no HTTP)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image, ImageFile

from contracts.errors import DomainError
from services.gateway.domain.upload_validation import ImageLimits, prepare_image, sniff_format
from tests.gateway import samples

LIMITS = ImageLimits(max_upload_bytes=1_000_000, max_pixels=40_000_000, min_side=32, reencode_max_side=1024)


def code_of(data: bytes, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(DomainError) as caught:
        prepare_image(data, limits)
    return caught.value.code


def decoded(data_b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data_b64)))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xd8\xff\xe0rest", "jpeg"),
        (b"\x89PNG\r\n\x1a\nrest", "png"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"GIF89a...", "gif"),
        (b"PK\x03\x04rest", "zip"),
        (b"hello world", None),
    ],
)
def test_format_is_named_from_magic_numbers(data, expected):
    assert sniff_format(data) == expected


def test_webp_is_accepted_and_stored_as_jpeg():
    stored = prepare_image(samples.encode(samples.noisy_rgb((64, 48)), "WEBP"), LIMITS)

    assert stored.media_type == "image/jpeg"
    assert (stored.width, stored.height) == (64, 48)


def test_animated_webp_is_rejected_with_image_animated():
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = samples.encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])

    assert code_of(data) == "image.animated"


def test_bmp_is_rejected_with_unsupported_format():
    assert code_of(samples.encode(Image.new("RGB", (64, 64)), "BMP")) == "image.unsupported_format"


def test_rgb_png_with_16_bits_per_channel_is_rejected_with_unsupported_bit_depth():
    assert code_of(samples.png_rgb_16bit()) == "image.unsupported_bit_depth"


def test_upload_over_the_byte_limit_is_rejected_with_upload_too_large():
    limits = ImageLimits(max_upload_bytes=100, max_pixels=10**6, min_side=1, reencode_max_side=64)

    assert code_of(samples.jpeg(), limits) == "upload.too_large"


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))

    stored = prepare_image(samples.encode(rgba, "PNG"), LIMITS)

    assert decoded(stored.data_b64).getpixel((0, 0)) == (255, 255, 255)


def test_greyscale_jpeg_is_stored_as_rgb():
    stored = prepare_image(samples.encode(Image.new("L", (64, 64), 128), "JPEG"), LIMITS)

    assert decoded(stored.data_b64).mode == "RGB"


def test_icc_profile_is_not_kept():
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = samples.encode(Image.new("RGB", (64, 64)), "JPEG", icc_profile=profile)

    stored = prepare_image(data, LIMITS)

    assert "icc_profile" not in decoded(stored.data_b64).info


def test_large_jpeg_is_decoded_at_reduced_scale_and_downscaled():
    data = samples.jpeg(size=(4000, 3000))

    stored = prepare_image(data, LIMITS)

    assert (stored.width, stored.height) == (1024, 768)


def test_same_upload_gives_the_same_stored_bytes():
    data = samples.jpeg()

    assert prepare_image(data, LIMITS).sha256 == prepare_image(data, LIMITS).sha256


def test_truncated_images_are_never_tolerated_even_if_pillow_is_told_to(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)

    with pytest.raises(RuntimeError):
        prepare_image(samples.truncated_jpeg(), LIMITS)


def test_jpeg_magic_with_garbage_after_is_rejected_with_image_corrupt():
    assert code_of(b"\xff\xd8\xff" + b"\x13\x37" * 500) == "image.corrupt"


def test_mpo_jpeg_from_a_phone_is_accepted_as_its_primary_image():
    primary = Image.new("RGB", (64, 48), (200, 10, 10))
    gain_map = Image.new("RGB", (32, 24), (0, 0, 255))
    data = samples.encode(primary, "MPO", save_all=True, append_images=[gain_map])

    stored = prepare_image(data, LIMITS)

    assert (stored.width, stored.height) == (64, 48)
    assert decoded(stored.data_b64).getpixel((10, 10))[0] > 150


def test_jpeg_comment_and_xmp_are_not_kept():
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">patient Jane Doe</x:xmpmeta>'
    data = samples.encode(Image.new("RGB", (64, 64)), "JPEG", comment=b"Jane Doe, DOB 1970", xmp=xmp)

    stored = prepare_image(data, LIMITS)

    raw = base64.b64decode(stored.data_b64)
    assert b"Jane Doe" not in raw
    assert not {"comment", "xmp", "exif"} & set(decoded(stored.data_b64).info)

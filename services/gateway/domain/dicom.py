"""DICOM ingest: one Part 10 instance in, the pixels as a PNG and the few header fields we keep out;
and the DICOMweb STOW-RS request parsing and Store Instances response (PS3.18 §10.5, Annex I).

Pure: pydicom, Pillow, numpy and the standard library; no I/O, no logging of header values.

Reading is defensive in the same way as `upload_validation`: the structure of the whole file is
walked before pydicom parses it (pydicom, by default, turns a truncated file into a shorter data
set with a warning), sizes are checked before any pixel is decoded, and only the first frame of
a multi-frame instance is decoded (a dermatoscope photo is one frame; the others are ignored).
The pydicom `Dataset` never leaves `read_dicom`: only the fields of `DicomInstance` do.
"""

from __future__ import annotations

import io
import itertools
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image
from pydicom import encaps
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut
from pydicom.pixels.utils import pixel_array

from contracts.errors import DomainError
from contracts.jobs import DICOM_UID_PATTERN, Laterality, Sex
from services.gateway.domain.errors import UploadTooLargeError

# -- errors ------------------------------------------------------------------------------------


class DicomError(DomainError):
    """An instance that cannot be ingested. Carries its SOP Class and Instance UIDs when they could
    be read, so a STOW-RS answer can name the instance it refuses."""

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | list[Any] | None = None,
        *,
        sop_class_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> None:
        super().__init__(message, details)
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


class DicomMalformedError(DicomError):
    code, status = "dicom.malformed", 422


class DicomUnsupportedSopClassError(DicomError):
    code, status = "dicom.unsupported_sop_class", 415


class DicomNoPixelsError(DicomError):
    code, status = "dicom.no_pixels", 422


class DicomUnsupportedTransferSyntaxError(DicomError):
    code, status = "dicom.unsupported_transfer_syntax", 415


class DicomTooLargeError(DicomError):
    code, status = "dicom.too_many_pixels", 413  # as image.too_many_pixels


class DicomMediaTypeError(DomainError):
    """`POST /v1/dicom` sent with another Content-Type than application/dicom."""

    code, status = "dicom.unsupported_media_type", 415


class StowRequestInvalidError(DomainError):
    """A STOW-RS request that cannot be read at all (or, for one part, that part)."""

    code, status = "dicomweb.malformed", 400


class StowUnsupportedMediaTypeError(StowRequestInvalidError):
    code, status = "dicomweb.unsupported_media_type", 415


class StowMalformedError(StowRequestInvalidError):
    code, status = "dicomweb.malformed", 400


# -- what is accepted --------------------------------------------------------------------------

DERMOSCOPIC_PHOTOGRAPHY_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.77.1.7"
VL_PHOTOGRAPHIC_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.77.1.4"
SUPPORTED_SOP_CLASSES: Final[dict[str, str]] = {
    DERMOSCOPIC_PHOTOGRAPHY_IMAGE_STORAGE: "Dermoscopic Photography Image Storage",
    VL_PHOTOGRAPHIC_IMAGE_STORAGE: "VL Photographic Image Storage",
}

IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE: Final = "1.2.840.10008.1.2.4.50"
RLE_LOSSLESS: Final = "1.2.840.10008.1.2.5"
SUPPORTED_TRANSFER_SYNTAXES: Final[dict[str, str]] = {
    IMPLICIT_VR_LITTLE_ENDIAN: "Implicit VR Little Endian",
    EXPLICIT_VR_LITTLE_ENDIAN: "Explicit VR Little Endian",
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: "Deflated Explicit VR Little Endian",
    JPEG_BASELINE: "JPEG Baseline (Process 1)",
    RLE_LOSSLESS: "RLE Lossless",
}
_EXPLICIT_VR_BIG_ENDIAN: Final = "1.2.840.10008.1.2.2"

_PHOTOMETRIC_INTERPRETATIONS: Final = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422"}
)

DICOM_MEDIA_TYPE: Final = "application/dicom"
DICOM_JSON_MEDIA_TYPE: Final = "application/dicom+json"

# -- the instance ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DicomInstance:
    """What an instance contributes to a job; nothing else of its header is kept.

    `png` is the first frame as 8-bit RGB, for `upload_validation.prepare_image` like any upload.
    `patient_id` is the raw PatientID, for the caller to turn into an opaque reference: it is
    kept out of `repr` so that it cannot reach a log by accident.
    """

    png: bytes = field(repr=False)
    patient_id: str | None = field(repr=False)
    body_site: str | None
    laterality: Laterality | None
    age: int | None
    sex: Sex | None
    acquired_at: datetime | None
    study_instance_uid: str
    series_instance_uid: str | None
    sop_instance_uid: str
    sop_class_uid: str


def read_dicom(data: bytes, *, max_pixels: int, max_bytes: int, max_side: int | None = None) -> DicomInstance:
    """Read one DICOM Part 10 instance; raise a `DomainError` when it is not one we take (nothing
    else escapes, bar MemoryError).

    `max_bytes` bounds the file and, for the deflated transfer syntax, the inflated data set;
    `max_pixels` bounds Rows x Columns, checked before decoding. `max_side` optionally downscales
    the PNG (e.g. to the re-encode size, which keeps a large instance's PNG small).
    """
    if len(data) > max_bytes:
        raise UploadTooLargeError("the DICOM instance is larger than allowed", {"max_bytes": max_bytes})
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    try:
        transfer_syntax = _check_structure(data, max_bytes)
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=False)
        except Exception as exc:  # pydicom raises many types (InvalidDicomError, ValueError, ...)
            raise DicomMalformedError("the DICOM data set could not be parsed") from exc
        sop_class_uid = _uid(ds, "SOPClassUID") or _uid(ds.file_meta, "MediaStorageSOPClassUID")
        sop_instance_uid = _uid(ds, "SOPInstanceUID")
        return _read_instance(ds, transfer_syntax, sop_class_uid, sop_instance_uid, max_pixels, max_side)
    except DicomError as exc:
        exc.sop_class_uid = exc.sop_class_uid or sop_class_uid
        exc.sop_instance_uid = exc.sop_instance_uid or sop_instance_uid
        raise
    except (DomainError, MemoryError):
        raise
    except Exception as exc:  # a check of ours or a decoder tripped on bytes nobody foresaw: damaged
        raise DicomMalformedError(
            "the DICOM instance could not be read",
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
        ) from exc


def _read_instance(
    ds: Dataset,
    transfer_syntax: str,
    sop_class_uid: str | None,
    sop_instance_uid: str | None,
    max_pixels: int,
    max_side: int | None,
) -> DicomInstance:
    if sop_class_uid is None:
        raise DicomMalformedError("the instance has no valid SOP Class UID")
    if sop_class_uid not in SUPPORTED_SOP_CLASSES:
        raise DicomUnsupportedSopClassError(
            "only dermoscopic and VL photographic images are accepted",
            {"sop_class_uid": sop_class_uid, "supported": _named(SUPPORTED_SOP_CLASSES)},
        )
    if sop_instance_uid is None:
        raise DicomMalformedError("the instance has no valid SOP Instance UID")
    study_instance_uid = _uid(ds, "StudyInstanceUID")
    if study_instance_uid is None:
        raise DicomMalformedError("the instance has no valid Study Instance UID")
    if _text(ds, "SeriesInstanceUID") is not None and _uid(ds, "SeriesInstanceUID") is None:
        raise DicomMalformedError("the Series Instance UID is not a valid UID")
    if transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise DicomUnsupportedTransferSyntaxError(
            "the pixel data is encoded in a transfer syntax that is not supported",
            {"transfer_syntax_uid": transfer_syntax, "supported": _named(SUPPORTED_TRANSFER_SYNTAXES)},
        )
    png = _first_frame_png(ds, transfer_syntax, max_pixels, max_side)
    acquired_at = _acquired_at(ds)
    return DicomInstance(
        png=png,
        patient_id=_text(ds, "PatientID"),
        body_site=_body_site(ds),
        laterality=_laterality(ds),
        age=_age(ds, acquired_at),
        sex=_SEXES.get((_text(ds, "PatientSex") or "").upper()),
        acquired_at=acquired_at,
        study_instance_uid=study_instance_uid,
        series_instance_uid=_uid(ds, "SeriesInstanceUID"),
        sop_instance_uid=sop_instance_uid,
        sop_class_uid=sop_class_uid,
    )


def _named(uids: dict[str, str]) -> list[dict[str, str]]:
    return [{"uid": uid, "name": name} for uid, name in uids.items()]


# -- structure ---------------------------------------------------------------------------------

_PREAMBLE_AND_PREFIX = 132
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED_LENGTH = 0xFFFFFFFF
_MAX_NESTING = 16
_TRANSFER_SYNTAX_TAG = 0x00020010
# Explicit VR: these VRs have a 2-byte reserved field and a 4-byte length (PS3.5 §7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN"}
    | {b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)


def _check_structure(data: bytes, max_bytes: int) -> str:
    """Walk every element of the file (values are skipped, not decoded) and fail on anything cut
    short; return the transfer syntax."""
    if len(data) < _PREAMBLE_AND_PREFIX or data[128:132] != b"DICM":
        raise DicomMalformedError("not a DICOM Part 10 file (no 128-byte preamble and 'DICM' prefix)")
    transfer_syntax, dataset_start = _walk_file_meta(data)
    if transfer_syntax == _EXPLICIT_VR_BIG_ENDIAN:
        raise DicomUnsupportedTransferSyntaxError(
            "Explicit VR Big Endian (retired) is not supported",
            {"transfer_syntax_uid": transfer_syntax, "supported": _named(SUPPORTED_TRANSFER_SYNTAXES)},
        )
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        inflated = _inflate(data[dataset_start:], max_bytes)
        _walk_dataset(inflated, 0, len(inflated), implicit=False, depth=0)
    else:
        implicit = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
        _walk_dataset(data, dataset_start, len(data), implicit=implicit, depth=0)
    return transfer_syntax


def _walk_file_meta(data: bytes) -> tuple[str, int]:
    pos = _PREAMBLE_AND_PREFIX
    transfer_syntax: str | None = None
    while pos + 2 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        tag, _, length, value_at = _element_header(data, pos, implicit=False)
        if length == _UNDEFINED_LENGTH or value_at + length > len(data):
            raise DicomMalformedError("the file meta information is truncated or damaged")
        if tag == _TRANSFER_SYNTAX_TAG:
            transfer_syntax = data[value_at : value_at + length].rstrip(b"\x00 ").decode("latin-1")
        pos = value_at + length
    if transfer_syntax is None or not _is_uid(transfer_syntax):
        raise DicomMalformedError("the file meta information has no valid Transfer Syntax UID")
    return transfer_syntax, pos


def _inflate(deflated: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(deflated, max_bytes + 1)
    except zlib.error as exc:
        raise DicomMalformedError("the deflated data set is damaged") from exc
    if len(inflated) > max_bytes:
        raise UploadTooLargeError(
            "the inflated DICOM data set is larger than allowed", {"max_bytes": max_bytes}
        )
    if not inflater.eof:
        raise DicomMalformedError("the deflated data set is truncated")
    return inflated


def _element_header(buf: bytes, pos: int, *, implicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value length, where the value starts) of the element at `pos`."""
    if pos + 8 > len(buf):
        raise DicomMalformedError("the DICOM data is truncated")
    group, element = struct.unpack_from("<HH", buf, pos)
    tag = group << 16 | element
    # Items and delimiters carry no VR, whatever the transfer syntax.
    if implicit or group == 0xFFFE:
        return tag, None, struct.unpack_from("<I", buf, pos + 4)[0], pos + 8
    vr = buf[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        if pos + 12 > len(buf):
            raise DicomMalformedError("the DICOM data is truncated")
        return tag, vr, struct.unpack_from("<I", buf, pos + 8)[0], pos + 12
    if vr in _SHORT_VRS:
        return tag, vr, struct.unpack_from("<H", buf, pos + 6)[0], pos + 8
    raise DicomMalformedError(f"an element has an unknown value representation (offset {pos})")


def _walk_dataset(buf: bytes, pos: int, end: int | None, *, implicit: bool, depth: int) -> int:
    """Check the elements from `pos` to `end`, or up to the item delimiter when `end` is None (an
    item of undefined length); return the offset after them."""
    limit = len(buf) if end is None else end
    while pos < limit:
        tag, vr, length, pos = _element_header(buf, pos, implicit=implicit)
        if tag == _ITEM_END:
            if end is None:
                return pos
            raise DicomMalformedError("an item delimiter appears outside an item")
        if length == _UNDEFINED_LENGTH:
            # PS3.5 §6.2.2: a UN element of undefined length holds an implicit VR sequence.
            pos = _walk_sequence(buf, pos, implicit=implicit or vr == b"UN", depth=depth + 1)
        else:
            pos += length
            if pos > limit:
                raise DicomMalformedError("the DICOM data is truncated")
    if end is None:
        raise DicomMalformedError("the DICOM data is truncated (an item has no end)")
    return pos


def _walk_sequence(buf: bytes, pos: int, *, implicit: bool, depth: int) -> int:
    if depth > _MAX_NESTING:
        raise DicomMalformedError("the DICOM data nests sequences too deeply")
    while True:
        tag, _, length, pos = _element_header(buf, pos, implicit=True)
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise DicomMalformedError("a sequence holds something other than items")
        if length == _UNDEFINED_LENGTH:
            pos = _walk_dataset(buf, pos, None, implicit=implicit, depth=depth)
        else:
            pos += length
            if pos > len(buf):
                raise DicomMalformedError("the DICOM data is truncated")


# -- pixels ------------------------------------------------------------------------------------


def _first_frame_png(ds: Dataset, transfer_syntax: str, max_pixels: int, max_side: int | None) -> bytes:
    if "PixelData" not in ds or not ds["PixelData"].value:
        raise DicomNoPixelsError("the instance has no pixel data")
    rows, columns = _positive_int(ds, "Rows"), _positive_int(ds, "Columns")
    if rows * columns > max_pixels:
        raise DicomTooLargeError(
            "the image declares more pixels than allowed",
            {"rows": rows, "columns": columns, "max_pixels": max_pixels},
        )
    samples = _positive_int(ds, "SamplesPerPixel")
    bits_stored = _positive_int(ds, "BitsStored")
    photometric = _text(ds, "PhotometricInterpretation") or ""
    if samples not in (1, 3) or photometric not in _PHOTOMETRIC_INTERPRETATIONS or bits_stored > 16:
        raise DicomMalformedError(
            "the pixel data is not a photograph this service reads",
            {
                "samples_per_pixel": samples,
                "photometric_interpretation": photometric[:32],
                "bits_stored": bits_stored,
                "supported_photometric_interpretations": sorted(_PHOTOMETRIC_INTERPRETATIONS),
            },
        )
    if transfer_syntax in (JPEG_BASELINE, RLE_LOSSLESS):
        frame = _first_encapsulated_frame(ds)
        if transfer_syntax == JPEG_BASELINE:
            _check_jpeg_frame(frame, rows, columns)
        else:
            _check_rle_frame(frame, rows, columns)
    try:
        arr = pixel_array(ds, index=0)
        if photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
            bits_stored = 16 if arr.dtype.itemsize > 1 else 8
    except Exception as exc:  # every decoder failure (short data, bad codestream, ...) means damaged
        raise DicomMalformedError("the pixel data could not be decoded") from exc
    rgb = _to_rgb8(
        arr, bits_stored, signed=_int(ds, "PixelRepresentation") == 1 and photometric != "PALETTE COLOR"
    )
    if photometric == "MONOCHROME1":
        np.subtract(255, rgb, out=rgb)
    return _png(rgb, max_side)


def _first_encapsulated_frame(ds: Dataset) -> bytes:
    frames = _int(ds, "NumberOfFrames") or 1
    try:
        return encaps.get_frame(ds["PixelData"].value, 0, number_of_frames=frames)
    except Exception as exc:
        raise DicomMalformedError("the encapsulated pixel data is damaged") from exc


_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
# SOF0..SOF15, less DHT (C4), JPG (C8) and DAC (CC), which share the range.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _check_jpeg_frame(frame: bytes, rows: int, columns: int) -> None:
    """Refuse a JPEG whose own header declares another size than Rows x Columns: Pillow would
    decode it at its own size, which makes a small header a decompression bomb."""
    size = _jpeg_size(frame)
    if size != (columns, rows):
        raise DicomMalformedError(
            "the JPEG frame's size does not match Rows and Columns",
            {"rows": rows, "columns": columns, "jpeg_size": list(size) if size else None},
        )


def _jpeg_size(frame: bytes) -> tuple[int, int] | None:
    if not frame.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 4 <= len(frame):
        if frame[pos] != 0xFF:
            return None
        marker = frame[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            pos += 2
            continue
        if marker in _JPEG_SOF_MARKERS:
            if pos + 9 > len(frame):
                return None
            height, width = struct.unpack_from(">HH", frame, pos + 5)
            return int(width), int(height)
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header came first
            return None
        pos += 2 + struct.unpack_from(">H", frame, pos + 2)[0]
    return None


_RLE_HEADER_BYTES = 64
# A conformant segment decodes to exactly Rows x Columns bytes; writers may pad by one run.
_RLE_PADDING_ALLOWANCE = 256


def _check_rle_frame(frame: bytes, rows: int, columns: int) -> None:
    """Refuse an RLE frame whose segments decode to more than the image holds: a run of two bytes
    expands to 128, so a few MB of runs would otherwise become GB in pydicom's decoder."""
    if len(frame) < _RLE_HEADER_BYTES:
        raise DicomMalformedError("the RLE frame header is truncated")
    count, *offsets = struct.unpack_from("<16I", frame, 0)
    if not 1 <= count <= 15:
        raise DicomMalformedError("the RLE frame header is damaged")
    bounds = [*offsets[:count], len(frame)]
    limit = rows * columns + _RLE_PADDING_ALLOWANCE
    for start, stop in itertools.pairwise(bounds):
        if not _RLE_HEADER_BYTES <= start <= stop <= len(frame):
            raise DicomMalformedError("the RLE frame header is damaged")
        if _rle_decoded_length(frame, start, stop, limit) > limit:
            raise DicomMalformedError("an RLE segment decodes to more bytes than the image holds")


def _rle_decoded_length(frame: bytes, pos: int, stop: int, limit: int) -> int:
    """Bytes the PackBits segment frame[pos:stop] decodes to, counting no further than past `limit`."""
    decoded = 0
    while pos < stop and decoded <= limit:
        header = frame[pos]
        if header < 128:  # literal run of header + 1 bytes
            decoded += header + 1
            pos += header + 2
        elif header > 128:  # one byte repeated 257 - header times
            decoded += 257 - header
            pos += 2
        else:
            pos += 1
    return decoded


def _to_rgb8(arr: npt.NDArray[Any], bits_stored: int, *, signed: bool) -> npt.NDArray[np.uint8]:
    """Scale the decoded samples to 8 bits by their stored depth (not by the image's own range, so
    a dark photo stays dark) and give greyscale three channels."""
    if arr.ndim not in (2, 3):
        raise DicomMalformedError("the decoded pixel data has an unexpected shape")
    # A decoder's output is never deeper than its container, whatever BitsStored claims.
    bits = min(bits_stored, arr.dtype.itemsize * 8)
    if arr.dtype != np.uint8 or bits != 8 or signed:
        work = arr.astype(np.int32) if signed else arr
        if signed:
            work += 1 << (bits - 1)
        np.clip(work, 0, (1 << bits) - 1, out=work)
        if bits > 8:
            arr = np.right_shift(work, bits - 8).astype(np.uint8)
        else:
            arr = (work.astype(np.uint16) * 255 // ((1 << bits) - 1)).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, np.newaxis], 3, axis=2)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _png(rgb: npt.NDArray[np.uint8], max_side: int | None) -> bytes:
    image = Image.fromarray(rgb, "RGB")
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    # Fast rather than small: prepare_image decodes and re-encodes this PNG straight away.
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# -- header fields -----------------------------------------------------------------------------

_UID = re.compile(DICOM_UID_PATTERN)
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")
_SEXES: Final[dict[str, Sex]] = {"M": "male", "F": "female", "O": "other"}
_LATERALITIES: Final[dict[str, Laterality]] = {"L": "left", "R": "right", "B": "bilateral", "U": "unpaired"}
_MAX_AGE = 130
_BODY_SITE_MAX_CHARS = 64


def _text(ds: Dataset, keyword: str) -> str | None:
    """The element's value as text (multiple values joined by backslash), trimmed of DICOM
    padding; None when absent, empty or unreadable: a sloppy optional field never fails a file."""
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    if value is None:
        return None
    if isinstance(value, bytes):
        text = value.decode("latin-1")
    elif isinstance(value, str | int | float):
        text = str(value)
    else:
        try:
            text = "\\".join(str(item) for item in value)
        except TypeError:
            return None
    return text.strip(" \x00") or None


def _is_uid(text: str) -> bool:
    return len(text) <= 64 and _UID.fullmatch(text) is not None


def _uid(ds: Dataset, keyword: str) -> str | None:
    text = _text(ds, keyword)
    return text if text is not None and _is_uid(text) else None


def _int(ds: Dataset, keyword: str) -> int | None:
    text = _text(ds, keyword)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _positive_int(ds: Dataset, keyword: str) -> int:
    value = _int(ds, keyword)
    if value is None or value <= 0:
        raise DicomMalformedError(f"the image pixel attribute {keyword} is missing or invalid")
    return value


def _laterality(ds: Dataset) -> Laterality | None:
    for keyword in ("ImageLaterality", "Laterality"):
        text = _text(ds, keyword)
        if text is not None and text.upper() in _LATERALITIES:
            return _LATERALITIES[text.upper()]
    return None


# -- body site ---------------------------------------------------------------------------------

# Words of a DICOM body part (BodyPartExamined defined terms, SNOMED code meanings) -> the
# HAM10000 localisation the model was trained with. Checked in order, so that "back of hand" is a
# hand, "palm of hand" acral and "lower back" a back.
_BODY_SITE_WORDS: Final[tuple[tuple[str, frozenset[str]], ...]] = (
    ("acral", frozenset({"PALM", "PALMAR", "SOLE", "PLANTAR", "NAIL", "SUBUNGUAL", "ACRAL"})),
    ("hand", frozenset({"HAND", "FINGER", "THUMB"})),
    ("foot", frozenset({"FOOT", "FEET", "TOE", "HEEL"})),
    ("ear", frozenset({"EAR", "AURICLE", "AURICULAR"})),
    ("scalp", frozenset({"SCALP"})),
    ("face", frozenset({"FACE", "FACIAL", "CHEEK", "FOREHEAD", "NOSE", "NASAL", "LIP", "CHIN", "EYELID"})),
    ("neck", frozenset({"NECK"})),
    ("genital", frozenset({"GENITAL", "GENITALIA", "PENIS", "SCROTUM", "VULVA", "PERINEUM"})),
    (
        "upper extremity",
        frozenset({"ARM", "UPPERARM", "FOREARM", "ELBOW", "WRIST", "SHOULDER", "UPPERLIMB"}),
    ),
    (
        "lower extremity",
        frozenset({"LEG", "THIGH", "KNEE", "CALF", "SHIN", "ANKLE", "LOWERLIMB"}),
    ),
    ("chest", frozenset({"CHEST", "THORAX", "THORACIC", "BREAST", "STERNAL"})),
    ("back", frozenset({"BACK"})),
    ("abdomen", frozenset({"ABDOMEN", "ABDOMINAL", "UMBILICUS", "UMBILICAL"})),
    ("trunk", frozenset({"TRUNK", "TORSO"})),
)
_WORD = re.compile(r"[A-Z]+")


def _body_site(ds: Dataset) -> str | None:
    """The anatomic region's meaning, else BodyPartExamined, in the HAM10000 vocabulary when one
    of them maps to it; otherwise the first of them as plain lower-case text."""
    candidates = [text for text in (_anatomic_region(ds), _text(ds, "BodyPartExamined")) if text]
    for text in candidates:
        mapped = _ham10000_site(text)
        if mapped is not None:
            return mapped
    for text in candidates:
        plain = " ".join(_CONTROL_CHARACTERS.sub(" ", text).split()).lower()[:_BODY_SITE_MAX_CHARS].strip()
        if plain:
            return plain
    return None


def _anatomic_region(ds: Dataset) -> str | None:
    try:
        regions = ds.get("AnatomicRegionSequence")
        return _text(regions[0], "CodeMeaning") if regions else None
    except Exception:
        return None


def _ham10000_site(text: str) -> str | None:
    words = _WORD.findall(text.upper())
    tokens = set(words)
    tokens |= {word[:-1] for word in words if len(word) > 3 and word.endswith("S")}
    # Two-word terms ("upper limb", "lower leg") count as one.
    tokens |= {first + second for first, second in itertools.pairwise(words)}
    for site, site_words in _BODY_SITE_WORDS:
        if tokens & site_words:
            return site
    if "EXTREMITY" in tokens or "LIMB" in tokens:
        if "UPPER" in tokens:
            return "upper extremity"
        if "LOWER" in tokens:
            return "lower extremity"
    return None


# -- dates and age -----------------------------------------------------------------------------

_DATETIME = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?\s*([+-]\d{4})?")
_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TIME = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?")
_OFFSET = re.compile(r"([+-])(\d{2})(\d{2})")
_AGE = re.compile(r"(\d{3})([DWMY])")
_DAYS_PER_AGE_UNIT: Final[dict[str, float]] = {"D": 1, "W": 7, "M": 365.25 / 12, "Y": 365.25}


def _acquired_at(ds: Dataset) -> datetime | None:
    """AcquisitionDateTime, else AcquisitionDate + Time, else ContentDate + Time; the zone is the
    value's own offset, else TimezoneOffsetFromUTC, else UTC. Unreadable values count as absent."""
    zone = _offset(_text(ds, "TimezoneOffsetFromUTC")) or UTC
    text = _text(ds, "AcquisitionDateTime")
    match = _DATETIME.fullmatch(text) if text else None
    if match is not None:
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        when = _datetime(year, month or "01", day or "01", hour, minute, second, fraction)
        if when is not None:
            return when.replace(tzinfo=_offset(offset) or zone)
    for date_keyword, time_keyword in (
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
    ):
        day_of = _date(_text(ds, date_keyword))
        if day_of is None:
            continue
        time_text = (_text(ds, time_keyword) or "").replace(":", "")
        time_match = _TIME.fullmatch(time_text)
        hour, minute, second, fraction = time_match.groups() if time_match else (None, None, None, None)
        when = _datetime(
            str(day_of.year), f"{day_of.month:02d}", f"{day_of.day:02d}", hour, minute, second, fraction
        )
        if when is not None:
            return when.replace(tzinfo=zone)
    return None


def _datetime(
    year: str,
    month: str,
    day: str,
    hour: str | None,
    minute: str | None,
    second: str | None,
    fraction: str | None,
) -> datetime | None:
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            min(int(second or 0), 59),  # 60: a leap second
            int((fraction or "0").ljust(6, "0")),
        )
    except ValueError:
        return None


def _date(text: str | None) -> date | None:
    match = _DATE.fullmatch(text.replace(".", "")) if text else None  # "YYYY.MM.DD": pre-1993 form
    if match is None:
        return None
    try:
        return date(*(int(part) for part in match.groups()))
    except ValueError:
        return None


def _offset(text: str | None) -> timezone | None:
    match = _OFFSET.fullmatch(text) if text else None
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    if delta > timedelta(hours=14) or int(minutes) >= 60:
        return None
    return timezone(-delta if sign == "-" else delta)


def _age(ds: Dataset, acquired_at: datetime | None) -> int | None:
    """PatientAge ("054Y", "006M": whole years), else from PatientBirthDate to StudyDate (or the
    acquisition date); None outside 0..130."""
    text = _text(ds, "PatientAge")
    match = _AGE.fullmatch(text) if text else None
    if match is not None:
        years = int(int(match.group(1)) * _DAYS_PER_AGE_UNIT[match.group(2)] // 365.25)
        return years if years <= _MAX_AGE else None
    born = _date(_text(ds, "PatientBirthDate"))
    seen = _date(_text(ds, "StudyDate")) or (acquired_at.date() if acquired_at else None)
    if born is None or seen is None:
        return None
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    return years if 0 <= years <= _MAX_AGE else None


# -- STOW-RS request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StowPart:
    """One part of a STOW-RS request: the instance's bytes, or why the part cannot be one."""

    data: bytes | None = field(default=None, repr=False)
    error: DomainError | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.error is None):
            raise ValueError("a STOW-RS part has either data or an error")


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAMETER = re.compile(rf'\s*;\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_QUOTED_PAIR = re.compile(r"\\(.)")
_MAX_BOUNDARY_CHARS = 70  # RFC 2046 §5.1.1
_MAX_PART_HEADER_BYTES = 16_384
_MAX_TRANSPORT_PADDING = 1_024
_BINARY_ENCODINGS = frozenset({"binary", "8bit", "7bit"})


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type into its lower-case media type and its parameters (names lower-case,
    values unquoted). Unquoted values may hold '/' (`type=application/dicom`, which many DICOMweb
    clients send although RFC 9110 wants it quoted)."""
    media_type, _, _ = value.partition(";")
    params: dict[str, str] = {}
    pos = len(media_type)
    while pos < len(value):
        match = _PARAMETER.match(value, pos)
        if match is None:
            if value[pos:].strip(" \t;"):
                raise ValueError("unreadable media type parameters")
            break
        name, raw = match.groups()
        params[name.lower()] = (
            _QUOTED_PAIR.sub(r"\1", raw[1:-1]) if raw.startswith('"') and raw.endswith('"') else raw.strip()
        )
        pos = match.end()
    return media_type.strip().lower(), params


def parse_stow_request(content_type: str, body: bytes) -> list[StowPart]:
    """Split a `multipart/related; type="application/dicom"` body into its parts. A request that
    cannot be split raises; a part that is not application/dicom becomes that part's error."""
    try:
        media_type, params = parse_media_type(content_type)
    except ValueError as exc:
        raise StowUnsupportedMediaTypeError("the Content-Type header could not be read") from exc
    if media_type != "multipart/related" or params.get("type", "").lower() != DICOM_MEDIA_TYPE:
        raise StowUnsupportedMediaTypeError(
            'send the instances as multipart/related; type="application/dicom"',
            {"supported": ['multipart/related; type="application/dicom"']},
        )
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= _MAX_BOUNDARY_CHARS or not boundary.isascii():
        raise StowMalformedError("the Content-Type has no valid boundary parameter")
    return _split_parts(body, boundary.encode("ascii"))


def _split_parts(body: bytes, boundary: bytes) -> list[StowPart]:
    dash_boundary = b"--" + boundary
    # RFC 2046 §5.1.1: the CRLF before a boundary belongs to the boundary, not to the part.
    delimiter = b"\r\n" + dash_boundary
    if body.startswith(dash_boundary):
        pos = len(dash_boundary)
    else:
        found = body.find(delimiter)
        if found < 0:
            raise StowMalformedError("the body holds no part delimited by the boundary")
        pos = found + len(delimiter)
    parts: list[StowPart] = []
    while not body.startswith(b"--", pos):
        line_end = body.find(b"\r\n", pos, pos + _MAX_TRANSPORT_PADDING)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise StowMalformedError("a boundary line is not followed by a line break")
        start = line_end + 2
        end = body.find(delimiter, start)
        if end < 0:
            raise StowMalformedError("the body ends inside a part (no closing boundary)")
        parts.append(_part(body, start, end))
        pos = end + len(delimiter)
    if not parts:
        raise StowMalformedError("the request holds no instance")
    return parts


def _part(body: bytes, start: int, end: int) -> StowPart:
    if body.startswith(b"\r\n", start):
        headers, content_start = b"", start + 2
    else:
        separator = body.find(b"\r\n\r\n", start, min(end, start + _MAX_PART_HEADER_BYTES))
        if separator < 0:
            return StowPart(error=StowMalformedError("a part's headers are damaged"))
        headers, content_start = body[start:separator], separator + 4
    fields: dict[str, str] = {}
    for line in headers.decode("latin-1").split("\r\n") if headers else []:
        name, colon, value = line.partition(":")
        if not colon:
            return StowPart(error=StowMalformedError("a part's headers are damaged"))
        fields[name.strip().lower()] = value.strip()
    # RFC 2387: a part without a Content-Type has the type the request names.
    try:
        part_type = parse_media_type(fields.get("content-type", DICOM_MEDIA_TYPE))[0]
    except ValueError:
        part_type = ""
    if part_type != DICOM_MEDIA_TYPE:
        return StowPart(
            error=StowUnsupportedMediaTypeError(
                "a part is not application/dicom", {"content_type": _printable(part_type)}
            )
        )
    encoding = fields.get("content-transfer-encoding", "binary").lower()
    if encoding not in _BINARY_ENCODINGS:
        return StowPart(
            error=StowMalformedError(
                "parts are sent in binary", {"content_transfer_encoding": _printable(encoding)}
            )
        )
    return StowPart(data=body[content_start:end])


def _printable(text: str) -> str:
    return _CONTROL_CHARACTERS.sub("", text)[:100]


# -- STOW-RS response --------------------------------------------------------------------------


@dataclass(frozen=True)
class StowResult:
    """What became of one part: stored as job `job_id`, or refused with `failure`."""

    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    job_id: str | None = None
    failure: DomainError | None = None


# PS3.18 Table I.2-2 "Store Instances Response Failure Reason Values" (same codes as the C-STORE
# statuses of PS3.4 Table B.2-1): 0122 Referenced SOP Class not supported, C122 Referenced Transfer
# Syntax not supported, A9xx Data Set does not match SOP Class, Cxxx Cannot understand, A7xx Refused
# out of Resources, 0110 Processing failure.
REFERENCED_SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
REFERENCED_TRANSFER_SYNTAX_NOT_SUPPORTED: Final = 0xC122
DATA_SET_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
CANNOT_UNDERSTAND: Final = 0xC000
OUT_OF_RESOURCES: Final = 0xA700
PROCESSING_FAILURE: Final = 0x0110

_FAILURE_REASONS: Final[dict[str, int]] = {
    "dicom.unsupported_sop_class": REFERENCED_SOP_CLASS_NOT_SUPPORTED,
    "dicom.unsupported_transfer_syntax": REFERENCED_TRANSFER_SYNTAX_NOT_SUPPORTED,
    # Both accepted IODs require Pixel Data, so an instance without it does not conform.
    "dicom.no_pixels": DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    "dicom.malformed": CANNOT_UNDERSTAND,
    "dicomweb.malformed": CANNOT_UNDERSTAND,
    "dicomweb.unsupported_media_type": CANNOT_UNDERSTAND,
    "image.corrupt": CANNOT_UNDERSTAND,
    # Our size limits are the resources an instance may take.
    "dicom.too_many_pixels": OUT_OF_RESOURCES,
    "image.too_many_pixels": OUT_OF_RESOURCES,
    "upload.too_large": OUT_OF_RESOURCES,
}


def failure_reason(error: DomainError) -> int:
    """The DICOM Failure Reason (0008,1197) for one of our errors; Processing failure otherwise."""
    return _FAILURE_REASONS.get(error.code, PROCESSING_FAILURE)


def stow_response(results: Sequence[StowResult], retrieve_base: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, DICOM JSON Store Instances Response, PS3.18 Annex I) for the parts' results.

    200 when every instance was stored, 202 when some were, 409 when none was (PS3.18 Table
    10.5.3-1 allows 409 for "a mixture of reasons"). A stored instance's Retrieve URL is its job
    (`{retrieve_base}/v1/jobs/{job_id}`); the study-level Retrieve URL (Type 2) is sent empty, as
    the instances are not kept for retrieval.
    """
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    base = retrieve_base.rstrip("/")
    for result in results:
        if result.failure is None and result.job_id is not None:
            item = _sop_reference(result.sop_class_uid, result.sop_instance_uid)
            item["00081190"] = {"vr": "UR", "Value": [f"{base}/v1/jobs/{quote(result.job_id, safe='')}"]}
            stored.append(item)
            continue
        failure = result.failure
        sop_class_uid, sop_instance_uid = result.sop_class_uid, result.sop_instance_uid
        if isinstance(failure, DicomError):
            sop_class_uid = sop_class_uid or failure.sop_class_uid
            sop_instance_uid = sop_instance_uid or failure.sop_instance_uid
        item = _sop_reference(sop_class_uid, sop_instance_uid)
        reason = failure_reason(failure) if failure is not None else PROCESSING_FAILURE
        item["00081197"] = {"vr": "US", "Value": [reason]}
        failed.append(item)
    body: dict[str, Any] = {"00081190": {"vr": "UR"}}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    status = 200 if stored and not failed else 202 if stored else 409
    return status, body


def _sop_reference(sop_class_uid: str | None, sop_instance_uid: str | None) -> dict[str, Any]:
    """SOP Instance Reference Macro (PS3.3 Table 10-11); a UID that could not be read is sent
    without a value rather than left out, so every item has the same attributes."""
    return {
        "00081150": {"vr": "UI", "Value": [sop_class_uid]} if sop_class_uid else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [sop_instance_uid]} if sop_instance_uid else {"vr": "UI"},
    }

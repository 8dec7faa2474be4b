"""DICOM instances built inside the tests (pydicom writes them, Pillow makes the JPEG frames), and
STOW-RS request bodies that carry them. Reused by the unit tests and the end-to-end tests."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from PIL import Image
from pydicom import encaps, uid
from pydicom.dataset import Dataset, FileMetaDataset

DERMOSCOPY_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.7"
VL_PHOTOGRAPHIC_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.4"
CT_IMAGE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1.2"
SOP_INSTANCE_UID = "1.2.826.0.1.3680043.8.498.1.2.3"

SKIN_RGB = (180, 110, 90)

TransferSyntax = Literal["explicit-le", "implicit-le", "deflated", "jpeg-baseline", "rle", "jpeg2000"]

_TRANSFER_SYNTAX_UIDS: dict[str, str] = {
    "explicit-le": uid.ExplicitVRLittleEndian,
    "implicit-le": uid.ImplicitVRLittleEndian,
    "deflated": uid.DeflatedExplicitVRLittleEndian,
    "jpeg-baseline": uid.JPEGBaseline8Bit,
    "rle": uid.RLELossless,
    "jpeg2000": uid.JPEG2000Lossless,
}


def solid_rgb(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = SKIN_RGB) -> np.ndarray:
    """A (rows, columns, 3) uint8 frame of one colour; `size` is (width, height) as in Pillow."""
    width, height = size
    return np.tile(np.array(color, dtype=np.uint8), (height, width, 1))


def dermoscopy_instance(
    transfer_syntax: TransferSyntax = "explicit-le",
    *,
    patient_id: str | None = "PAT-001",
    sop_class: str = DERMOSCOPY_SOP_CLASS,
    with_pixels: bool = True,
    size: tuple[int, int] = (64, 48),
    color: tuple[int, int, int] = SKIN_RGB,
    frames: int = 1,
    sop_instance_uid: str = SOP_INSTANCE_UID,
    attributes: Mapping[str, object] | None = None,
) -> bytes:
    """A DICOM Part 10 file holding a solid-colour RGB frame (`size` is width, height).

    `frames` > 1 adds frames of other colours after the first. `attributes` sets or, with a None
    value, removes header attributes by keyword (e.g. {"PatientAge": "054Y", "Laterality": None}).
    """
    ds = _base_dataset(sop_class, patient_id, sop_instance_uid)
    if with_pixels:
        first = solid_rgb(size, color)
        others = [solid_rgb(size, (color[2], color[0], color[1])) for _ in range(frames - 1)]
        _set_rgb_pixels(ds, [first, *others], transfer_syntax)
    return _finish(ds, transfer_syntax, attributes)


def monochrome_instance(
    *,
    bits_stored: int = 12,
    photometric: Literal["MONOCHROME1", "MONOCHROME2"] = "MONOCHROME2",
    signed: bool = False,
    value: int = 3000,
    size: tuple[int, int] = (40, 30),
    transfer_syntax: TransferSyntax = "explicit-le",
    attributes: Mapping[str, object] | None = None,
) -> bytes:
    """A greyscale instance whose every pixel holds `value` (16 bits allocated when bits_stored > 8)."""
    ds = _base_dataset(VL_PHOTOGRAPHIC_SOP_CLASS, "PAT-002", SOP_INSTANCE_UID)
    width, height = size
    bits_allocated = 8 if bits_stored <= 8 else 16
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}
    arr = np.full((height, width), value, dtype=dtype[(bits_allocated, signed)])
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = arr.tobytes()
    return _finish(ds, transfer_syntax, attributes)


def palette_instance(size: tuple[int, int] = (32, 32)) -> bytes:
    """An 8-bit PALETTE COLOR instance: index 1 everywhere, which the palette maps to pure green."""
    ds = _base_dataset(VL_PHOTOGRAPHIC_SOP_CLASS, "PAT-003", SOP_INSTANCE_UID)
    width, height = size
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    red, green, blue = np.zeros(256, np.uint16), np.zeros(256, np.uint16), np.zeros(256, np.uint16)
    green[1] = 0xFFFF
    for colour, lut in (("Red", red), ("Green", green), ("Blue", blue)):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut.tobytes())
    ds.PixelData = np.ones((height, width), np.uint8).tobytes()
    return _finish(ds, "explicit-le", None)


def stow_body(
    parts: Sequence[tuple[str | None, bytes]], boundary: str = "DICOMwebBoundary42"
) -> tuple[str, bytes]:
    """(Content-Type, body) of a STOW-RS request; each part is (its Content-Type or None, bytes)."""
    chunks: list[bytes] = [b"preamble to ignore"]
    for content_type, data in parts:
        headers = f"Content-Type: {content_type}\r\n" if content_type is not None else ""
        chunks.append(f"\r\n--{boundary}\r\n{headers}\r\n".encode() + data)
    chunks.append(f"\r\n--{boundary}--\r\n".encode())
    return f'multipart/related; type="application/dicom"; boundary={boundary}', b"".join(chunks)


def _base_dataset(sop_class: str, patient_id: str | None, sop_instance_uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.Modality = "XC"
    ds.PatientName = "Doe^Jane"
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.PatientSex = "F"
    ds.PatientAge = "054Y"
    ds.BodyPartExamined = "ARM"
    ds.ImageLaterality = "L"
    ds.AcquisitionDateTime = "20250314093015.25"
    ds.TimezoneOffsetFromUTC = "+0100"
    ds.StudyDate = "20250314"
    return ds


def _set_rgb_pixels(ds: Dataset, frames: list[np.ndarray], transfer_syntax: str) -> None:
    height, width = frames[0].shape[:2]
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    if transfer_syntax == "jpeg-baseline":
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = encaps.encapsulate([_jpeg(frame) for frame in frames])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        return
    if transfer_syntax == "jpeg2000":
        # Never decoded: the transfer syntax alone is refused.
        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = encaps.encapsulate([b"\xff\x4f\xff\x51" + bytes(60) for _ in frames])
        ds["PixelData"].VR = "OB"
        return
    ds.PhotometricInterpretation = "RGB"
    ds.PixelData = np.stack(frames).tobytes()
    if transfer_syntax == "rle":
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
        arr = np.stack(frames) if len(frames) > 1 else frames[0]
        ds.compress(uid.RLELossless, arr, generate_instance_uid=False)


def _jpeg(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _finish(ds: Dataset, transfer_syntax: str, attributes: Mapping[str, object] | None) -> bytes:
    for keyword, value in (attributes or {}).items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.UID(ds.SOPClassUID if "SOPClassUID" in ds else DERMOSCOPY_SOP_CLASS)
    meta.MediaStorageSOPInstanceUID = uid.UID(
        ds.SOPInstanceUID if "SOPInstanceUID" in ds else SOP_INSTANCE_UID
    )
    meta.TransferSyntaxUID = uid.UID(_TRANSFER_SYNTAX_UIDS[transfer_syntax])
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()

"""DICOM ingest and the STOW-RS request and response, without HTTP (services/gateway/domain/dicom.py)."""

from __future__ import annotations

import io
import json
import random
import struct
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image
from pydicom import encaps
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from contracts.errors import DomainError
from contracts.jobs import ImageMetadata
from services.gateway.domain import dicom
from services.gateway.domain.dicom import (
    DicomInstance,
    DicomMalformedError,
    DicomNoPixelsError,
    DicomTooLargeError,
    DicomUnsupportedSopClassError,
    DicomUnsupportedTransferSyntaxError,
    StowMalformedError,
    StowPart,
    StowResult,
    StowUnsupportedMediaTypeError,
    failure_reason,
    parse_stow_request,
    read_dicom,
    stow_response,
)
from services.gateway.domain.errors import CorruptImageError, ImageTooSmallError, UploadTooLargeError
from tests.gateway import dicom_samples as samples
from tests.gateway.samples import png as png_upload

MAX_PIXELS = 1_000_000
MAX_BYTES = 5_000_000
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def read(data: bytes, **limits: int) -> DicomInstance:
    return read_dicom(data, **{"max_pixels": MAX_PIXELS, "max_bytes": MAX_BYTES, **limits})


def refusal(data: bytes, **limits: int) -> DomainError:
    with pytest.raises(DomainError) as caught:
        read(data, **limits)
    return caught.value


def decoded(instance: DicomInstance) -> Image.Image:
    image = Image.open(io.BytesIO(instance.png), formats=["PNG"])
    image.load()
    return image


def instance_with(**attributes: object) -> DicomInstance:
    return read(samples.dermoscopy_instance(attributes=attributes))


def region(meaning: str) -> Sequence:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "123", "SCT", meaning
    return Sequence([item])


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any pixel is decoded."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(dicom, "pixel_array", refuse)


# -- pixels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transfer_syntax", "tolerance"),
    [("explicit-le", 0), ("implicit-le", 0), ("deflated", 0), ("jpeg-baseline", 4), ("rle", 0)],
)
def test_each_supported_transfer_syntax_becomes_an_rgb_png_of_the_frame(transfer_syntax, tolerance):
    instance = read(samples.dermoscopy_instance(transfer_syntax, size=(64, 48), color=(200, 120, 40)))

    image = decoded(instance)
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 48))
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    assert np.abs(pixels - (200, 120, 40)).max() <= tolerance


def test_the_png_goes_through_the_ordinary_upload_pipeline():
    from services.gateway.domain.upload_validation import ImageLimits, prepare_image

    instance = read(samples.dermoscopy_instance("jpeg-baseline", size=(96, 64)))
    limits = ImageLimits(
        max_upload_bytes=1_000_000, max_pixels=MAX_PIXELS, min_side=32, reencode_max_side=1024
    )

    stored = prepare_image(instance.png, limits)

    assert (stored.width, stored.height, stored.media_type) == (96, 64, "image/png")


@pytest.mark.parametrize("transfer_syntax", ["explicit-le", "jpeg-baseline", "rle"])
def test_a_multi_frame_instance_gives_its_first_frame(transfer_syntax):
    data = samples.dermoscopy_instance(transfer_syntax, frames=3, color=(30, 200, 90))

    image = decoded(read(data))

    # The builder gives frames after the first the channels rotated: (90, 30, 200).
    assert np.abs(np.asarray(image)[10, 10].astype(int) - (30, 200, 90)).max() <= 4


def test_vl_photographic_images_are_accepted_too():
    instance = read(samples.dermoscopy_instance(sop_class=samples.VL_PHOTOGRAPHIC_SOP_CLASS))

    assert instance.sop_class_uid == samples.VL_PHOTOGRAPHIC_SOP_CLASS


@pytest.mark.parametrize(
    ("options", "grey"),
    [
        ({"bits_stored": 12, "value": 3000}, 3000 >> 4),
        ({"bits_stored": 16, "value": 40_000}, 40_000 >> 8),
        ({"bits_stored": 8, "value": 77}, 77),
        ({"bits_stored": 12, "value": 3000, "photometric": "MONOCHROME1"}, 255 - (3000 >> 4)),
        ({"bits_stored": 12, "value": -100, "signed": True}, (2048 - 100) >> 4),
    ],
)
def test_greyscale_is_scaled_to_8_bits_by_its_stored_depth_and_given_three_channels(options, grey):
    image = decoded(read(samples.monochrome_instance(**options)))

    assert image.mode == "RGB"
    assert np.unique(np.asarray(image).reshape(-1, 3), axis=0).tolist() == [[grey, grey, grey]]


def test_palette_colour_goes_through_its_lookup_table():
    image = decoded(read(samples.palette_instance()))

    assert np.unique(np.asarray(image).reshape(-1, 3), axis=0).tolist() == [[0, 255, 0]]


def test_max_side_downscales_the_png():
    instance = read(samples.dermoscopy_instance(size=(200, 100)), max_side=50)

    assert decoded(instance).size == (50, 25)


# -- refusals ----------------------------------------------------------------------------------


def test_another_sop_class_is_refused_with_415_naming_the_accepted_ones():
    error = refusal(samples.dermoscopy_instance(sop_class=samples.CT_IMAGE_SOP_CLASS))

    assert isinstance(error, DicomUnsupportedSopClassError)
    assert (error.status, error.code) == (415, "dicom.unsupported_sop_class")
    assert error.details is not None and error.details["sop_class_uid"] == samples.CT_IMAGE_SOP_CLASS
    assert {item["uid"] for item in error.details["supported"]} == {
        samples.DERMOSCOPY_SOP_CLASS,
        samples.VL_PHOTOGRAPHIC_SOP_CLASS,
    }
    # The STOW-RS answer names the refused instance.
    assert (error.sop_class_uid, error.sop_instance_uid) == (
        samples.CT_IMAGE_SOP_CLASS,
        samples.SOP_INSTANCE_UID,
    )


def test_the_sop_class_falls_back_to_the_file_meta():
    instance = instance_with(SOPClassUID=None)

    assert instance.sop_class_uid == samples.DERMOSCOPY_SOP_CLASS


def test_an_instance_without_pixel_data_is_refused_with_422():
    error = refusal(samples.dermoscopy_instance(with_pixels=False))

    assert isinstance(error, DicomNoPixelsError)
    assert (error.status, error.code) == (422, "dicom.no_pixels")


@pytest.mark.parametrize(
    "attributes",
    [
        {"StudyInstanceUID": None},
        {"SOPInstanceUID": None},
        {"StudyInstanceUID": "1.2.abc"},
        {"SOPInstanceUID": "1." + "2" * 70},
        {"SeriesInstanceUID": "1..2"},
    ],
)
def test_missing_or_invalid_uids_make_the_instance_malformed(attributes):
    error = refusal(samples.dermoscopy_instance(attributes=attributes))

    assert (error.status, error.code) == (422, "dicom.malformed")


def test_jpeg_2000_is_refused_with_415_naming_the_supported_transfer_syntaxes(no_decoding):
    error = refusal(samples.dermoscopy_instance("jpeg2000"))

    assert isinstance(error, DicomUnsupportedTransferSyntaxError)
    assert (error.status, error.code) == (415, "dicom.unsupported_transfer_syntax")
    assert error.details is not None and error.details["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.90"
    assert {item["uid"] for item in error.details["supported"]} == {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.5",
    }


def test_big_endian_is_refused_as_an_unsupported_transfer_syntax():
    data = samples.dermoscopy_instance()
    # Same length, so the file meta stays well-formed.
    big_endian = data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.2\x00", 1)
    assert big_endian != data

    assert refusal(big_endian).code == "dicom.unsupported_transfer_syntax"


def test_too_many_pixels_are_refused_before_any_pixel_is_decoded(no_decoding):
    error = refusal(samples.dermoscopy_instance(size=(64, 48)), max_pixels=64 * 48 - 1)

    assert isinstance(error, DicomTooLargeError)
    assert (error.status, error.code) == (413, "dicom.too_many_pixels")
    assert error.details == {"rows": 48, "columns": 64, "max_pixels": 64 * 48 - 1}


def test_a_file_over_max_bytes_is_refused_before_parsing():
    data = samples.dermoscopy_instance()

    error = refusal(data, max_bytes=len(data) - 1)

    assert isinstance(error, UploadTooLargeError)


def test_a_deflated_data_set_inflating_past_max_bytes_is_refused(no_decoding):
    data = samples.dermoscopy_instance("deflated", size=(1000, 1000))  # 3 MB of one colour
    assert len(data) < 50_000

    error = refusal(data, max_bytes=1_000_000)

    assert isinstance(error, UploadTooLargeError)


def test_a_jpeg_frame_larger_than_rows_and_columns_is_refused_before_decoding(no_decoding):
    data = samples.dermoscopy_instance("jpeg-baseline", size=(64, 48), attributes={"Rows": 8, "Columns": 8})

    error = refusal(data)

    assert error.code == "dicom.malformed"
    assert error.details is not None and error.details["jpeg_size"] == [64, 48]


def test_an_rle_frame_that_decodes_past_the_image_is_refused_before_decoding(no_decoding):
    runs = b"\x81\x00" * 5_000  # each run: 128 bytes; 640 kB per segment for a 64 x 48 image
    header = struct.pack("<16I", 3, 64, 64 + len(runs), 64 + 2 * len(runs), *[0] * 12)
    bomb = encaps.encapsulate([header + runs * 3])
    data = samples.dermoscopy_instance("rle", attributes={"PixelData": bomb})

    assert refusal(data).code == "dicom.malformed"


def test_undecodable_pixel_data_is_malformed():
    jpeg_frame = encaps.encapsulate([b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x30\x00\x40\x03" + b"\x00" * 40])
    data = samples.dermoscopy_instance("jpeg-baseline", attributes={"PixelData": jpeg_frame})

    assert refusal(data).code == "dicom.malformed"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "transfer_syntax", ["explicit-le", "implicit-le", "deflated", "jpeg-baseline", "rle"]
)
def test_every_truncation_of_an_instance_is_malformed(transfer_syntax):
    data = samples.dermoscopy_instance(transfer_syntax, size=(12, 8))
    pixel_data_at = data.find(PIXEL_DATA_TAG)
    # PS3.5 §A.5: an odd-length deflated stream is padded by one byte, which a cut may drop.
    shortest_complete = len(data) - 1 if transfer_syntax == "deflated" and len(data) % 2 == 0 else len(data)
    codes: dict[int, str] = {}

    for length in range(shortest_complete):
        with pytest.raises(DomainError) as caught:
            read(data[:length])
        codes[length] = caught.value.code

    assert set(codes.values()) <= {"dicom.malformed", "dicom.no_pixels"}
    # Cut exactly between two elements before the pixel data, a file is complete, only pixel-less.
    assert all(length <= pixel_data_at for length, code in codes.items() if code == "dicom.no_pixels")
    assert sum(code == "dicom.malformed" for code in codes.values()) > 0.9 * len(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"DICM",
        bytes(128) + b"DICM",
        bytes(random.Random(1).randbytes(4_000)),
        bytes(128) + b"DICM" + random.Random(2).randbytes(4_000),
        png_upload(),
        b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x04\x00abcd",
    ],
    ids=["empty", "prefix-only", "preamble-only", "random", "random-after-preamble", "png", "bad-uid-meta"],
)
def test_bytes_that_are_not_dicom_are_malformed(data):
    error = refusal(data)

    assert isinstance(error, DicomMalformedError)
    assert (error.status, error.code) == (422, "dicom.malformed")


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("transfer_syntax", ["explicit-le", "implicit-le", "jpeg-baseline", "rle"])
def test_corrupted_bytes_raise_only_domain_errors(transfer_syntax):
    original = samples.dermoscopy_instance(transfer_syntax, size=(12, 8))
    rng = random.Random(transfer_syntax)
    outcomes: set[str] = set()

    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(132, len(data))] = rng.randrange(256)
        try:
            read(bytes(data))
            outcomes.add("read")
        except DomainError as exc:
            outcomes.add(exc.code)

    assert outcomes <= {
        "read",
        "dicom.malformed",
        "dicom.no_pixels",
        "dicom.unsupported_sop_class",
        "dicom.unsupported_transfer_syntax",
        "dicom.too_many_pixels",
        "upload.too_large",
    }
    assert "dicom.malformed" in outcomes


# -- header fields -----------------------------------------------------------------------------


def test_the_raw_patient_id_is_returned_but_never_shown_in_repr():
    instance = read(samples.dermoscopy_instance(patient_id="MRN-SECRET-4711"))

    assert instance.patient_id == "MRN-SECRET-4711"
    assert "MRN-SECRET-4711" not in repr(instance)
    assert "MRN-SECRET-4711" not in str(instance)


def test_no_patient_id_gives_none():
    assert read(samples.dermoscopy_instance(patient_id=None)).patient_id is None


def test_the_uids_are_kept():
    instance = read(samples.dermoscopy_instance())

    assert (
        instance.study_instance_uid,
        instance.series_instance_uid,
        instance.sop_instance_uid,
        instance.sop_class_uid,
    ) == (samples.STUDY_UID, samples.SERIES_UID, samples.SOP_INSTANCE_UID, samples.DERMOSCOPY_SOP_CLASS)


def test_the_series_uid_is_optional():
    assert instance_with(SeriesInstanceUID=None).series_instance_uid is None


@pytest.mark.parametrize(
    ("patient_age", "age"),
    [("054Y", 54), ("130Y", 130), ("131Y", None), ("006M", 0), ("030M", 2), ("010W", 0), ("003D", 0)],
)
def test_patient_age_becomes_whole_years(patient_age, age):
    assert instance_with(PatientAge=patient_age).age == age


@pytest.mark.parametrize(
    ("birth_date", "study_date", "age"),
    [("19700615", "20250614", 54), ("19700615", "20250615", 55), ("20300101", "20250101", None)],
)
def test_without_patient_age_the_age_comes_from_birth_and_study_dates(birth_date, study_date, age):
    instance = instance_with(PatientAge=None, PatientBirthDate=birth_date, StudyDate=study_date)

    assert instance.age == age


def test_an_unreadable_age_and_no_birth_date_give_no_age():
    assert instance_with(PatientAge="54 years").age is None


@pytest.mark.parametrize(
    ("patient_sex", "sex"), [("M", "male"), ("F", "female"), ("O", "other"), (None, None)]
)
def test_patient_sex_is_mapped(patient_sex, sex):
    assert instance_with(PatientSex=patient_sex).sex == sex


@pytest.mark.parametrize(
    ("attributes", "laterality"),
    [
        ({"ImageLaterality": "R"}, "right"),
        ({"ImageLaterality": "L"}, "left"),
        ({"ImageLaterality": "B"}, "bilateral"),
        ({"ImageLaterality": "U"}, "unpaired"),
        ({"ImageLaterality": None, "Laterality": "R"}, "right"),
        ({"ImageLaterality": None}, None),
    ],
)
def test_laterality_comes_from_image_laterality_else_laterality(attributes, laterality):
    assert instance_with(**attributes).laterality == laterality


@pytest.mark.parametrize(
    ("body_part", "site"),
    [
        ("LEG", "lower extremity"),
        ("THIGH", "lower extremity"),
        ("KNEE", "lower extremity"),
        ("LOWER LIMB", "lower extremity"),
        ("ARM", "upper extremity"),
        ("FOREARM", "upper extremity"),
        ("UPPER LIMB", "upper extremity"),
        ("HAND", "hand"),
        ("FOOT", "foot"),
        ("SCALP", "scalp"),
        ("EAR", "ear"),
        ("FACE", "face"),
        ("NECK", "neck"),
        ("CHEST", "chest"),
        ("BACK", "back"),
        ("ABDOMEN", "abdomen"),
        ("TRUNK", "trunk"),
        ("HEAD", "head"),
    ],
)
def test_body_part_examined_maps_to_the_ham10000_sites(body_part, site):
    assert instance_with(BodyPartExamined=body_part).body_site == site


@pytest.mark.parametrize(
    ("meaning", "site"),
    [
        ("Structure of left lower leg", "lower extremity"),
        ("Skin structure of palm of hand", "acral"),
        ("Sole of foot", "acral"),
        ("Back of hand", "hand"),
        ("Upper back", "back"),
        ("Upper extremity", "upper extremity"),
        ("Genital structure", "genital"),
        ("Toes", "foot"),
    ],
)
def test_the_anatomic_region_is_preferred_to_body_part_examined(meaning, site):
    instance = instance_with(AnatomicRegionSequence=region(meaning), BodyPartExamined="ARM")

    assert instance.body_site == site


def test_a_mapped_body_part_wins_over_an_unmapped_region():
    instance = instance_with(AnatomicRegionSequence=region("Skin of body"), BodyPartExamined="THIGH")

    assert instance.body_site == "lower extremity"


def test_an_unmapped_body_site_is_kept_as_plain_lower_case_text_that_fits_image_metadata():
    meaning = "Region\tof\x01 the  " + "x" * 100

    site = instance_with(AnatomicRegionSequence=region(meaning), BodyPartExamined=None).body_site

    assert site is not None and site.startswith("region of the xxx")
    assert len(site) <= 64
    ImageMetadata(body_site=site)  # no control characters, within max_length


def test_no_body_site_gives_none():
    assert instance_with(BodyPartExamined=None).body_site is None


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        # The builder sets AcquisitionDateTime 20250314093015.25 and TimezoneOffsetFromUTC +0100.
        ({}, datetime(2025, 3, 14, 9, 30, 15, 250_000, tzinfo=timezone(timedelta(hours=1)))),
        (
            {"AcquisitionDateTime": "20250314093015-0500"},
            datetime(2025, 3, 14, 9, 30, 15, tzinfo=timezone(-timedelta(hours=5))),
        ),
        (
            {"TimezoneOffsetFromUTC": None},
            datetime(2025, 3, 14, 9, 30, 15, 250_000, tzinfo=UTC),
        ),
        (
            {"AcquisitionDateTime": None, "AcquisitionDate": "20250101", "AcquisitionTime": "0805"},
            datetime(2025, 1, 1, 8, 5, tzinfo=timezone(timedelta(hours=1))),
        ),
        (
            {"AcquisitionDateTime": None, "ContentDate": "20250102", "ContentTime": "235959.5"},
            datetime(2025, 1, 2, 23, 59, 59, 500_000, tzinfo=timezone(timedelta(hours=1))),
        ),
        ({"AcquisitionDateTime": "20251399"}, None),
        ({"AcquisitionDateTime": None}, None),
    ],
)
def test_acquisition_time_with_its_time_zone(attributes, expected):
    assert instance_with(**attributes).acquired_at == expected


# -- STOW-RS request ---------------------------------------------------------------------------


def test_a_stow_request_keeps_good_parts_and_reports_bad_ones_per_instance():
    first = samples.dermoscopy_instance(sop_instance_uid="1.2.3.1")
    second = samples.dermoscopy_instance("jpeg-baseline", sop_instance_uid="1.2.3.2")
    broken = first[: len(first) // 2]
    content_type, body = samples.stow_body(
        [
            ("application/dicom", first),
            ("text/plain", b"hello"),
            ("application/dicom", broken),
            (None, second),
        ]
    )

    parts = parse_stow_request(content_type, body)

    assert [part.data for part in parts] == [first, None, broken, second]
    assert isinstance(parts[1].error, StowUnsupportedMediaTypeError)
    outcomes = []
    for part in parts:
        try:
            outcomes.append(read(part.data).sop_instance_uid if part.data is not None else part.error.code)
        except DomainError as exc:
            outcomes.append(exc.code)
    assert outcomes == ["1.2.3.1", "dicomweb.unsupported_media_type", "dicom.malformed", "1.2.3.2"]


def test_part_bodies_are_binary_safe():
    tricky = b"\r\n--notTheBoundary\r\n\r\n--\r\n\x00\xff"
    content_type, body = samples.stow_body([("application/dicom", tricky)], boundary="b0undary")

    assert [part.data for part in parse_stow_request(content_type, body)] == [tricky]


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/dicom"; boundary=XyZ',
        "multipart/related; type=application/dicom; boundary=XyZ",
        'Multipart/Related; Type="Application/DICOM"; Boundary="XyZ"',
        'multipart/related;boundary="XyZ";type=application/dicom;start="<root>"',
    ],
)
def test_the_request_content_type_is_read_leniently(content_type):
    body = b"--XyZ\r\nContent-Type: application/dicom; transfer-syntax=*\r\n\r\nDATA\r\n--XyZ--"

    assert [part.data for part in parse_stow_request(content_type, body)] == [b"DATA"]


@pytest.mark.parametrize(
    ("content_type", "error_type", "status", "code"),
    [
        ("application/dicom", StowUnsupportedMediaTypeError, 415, "dicomweb.unsupported_media_type"),
        (
            "multipart/related; boundary=x",
            StowUnsupportedMediaTypeError,
            415,
            "dicomweb.unsupported_media_type",
        ),
        (
            'multipart/related; type="application/dicom+json"; boundary=x',
            StowUnsupportedMediaTypeError,
            415,
            "dicomweb.unsupported_media_type",
        ),
        (
            'multipart/related; type="application/dicom" x; boundary=x',
            StowUnsupportedMediaTypeError,
            415,
            None,
        ),
        ('multipart/related; type="application/dicom"', StowMalformedError, 400, "dicomweb.malformed"),
        ('multipart/related; type="application/dicom"; boundary=""', StowMalformedError, 400, None),
        (f'multipart/related; type="application/dicom"; boundary={"b" * 71}', StowMalformedError, 400, None),
    ],
)
def test_a_request_that_is_not_multipart_related_dicom_is_refused_whole(
    content_type, error_type, status, code
):
    with pytest.raises(error_type) as caught:
        parse_stow_request(content_type, b"--x\r\n\r\nDATA\r\n--x--")

    assert caught.value.status == status
    if code is not None:
        assert caught.value.code == code


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"no boundary here",
        b"--XyZ--\r\n",
        b"--XyZ\r\nContent-Type: application/dicom\r\n\r\ncut short",
        b"--XyZ garbage\r\n\r\nDATA\r\n--XyZ--",
    ],
    ids=["empty", "no-boundary", "no-parts", "unterminated", "garbage-after-boundary"],
)
def test_a_broken_multipart_body_is_refused_whole_with_400(body):
    with pytest.raises(StowMalformedError) as caught:
        parse_stow_request('multipart/related; type="application/dicom"; boundary=XyZ', body)

    assert (caught.value.status, caught.value.code) == (400, "dicomweb.malformed")


def test_parts_with_damaged_headers_or_encodings_fail_alone():
    body = (
        b"--XyZ\r\nnot a header line\r\n\r\nA\r\n"
        b"--XyZ\r\nContent-Transfer-Encoding: base64\r\n\r\nQQ==\r\n"
        b"--XyZ\r\n\r\nGOOD\r\n--XyZ--"
    )

    parts = parse_stow_request('multipart/related; type="application/dicom"; boundary=XyZ', body)

    assert [type(part.error) for part in parts] == [StowMalformedError, StowMalformedError, type(None)]
    assert parts[2].data == b"GOOD"


def test_a_stow_part_holds_data_or_an_error_never_both_or_neither():
    with pytest.raises(ValueError):
        StowPart()
    with pytest.raises(ValueError):
        StowPart(data=b"x", error=StowMalformedError("x"))


# -- STOW-RS response --------------------------------------------------------------------------

CLASS = samples.DERMOSCOPY_SOP_CLASS


def stored(n: int) -> StowResult:
    return StowResult(sop_class_uid=CLASS, sop_instance_uid=f"1.2.3.{n}", job_id=f"job-{n}")


def test_all_stored_answers_200_with_each_instance_and_its_job_url():
    status, body = stow_response([stored(1), stored(2)], retrieve_base="https://triage.example/")

    assert status == 200
    assert body["00081190"] == {"vr": "UR"}
    assert "00081198" not in body
    assert body["00081199"] == {
        "vr": "SQ",
        "Value": [
            {
                "00081150": {"vr": "UI", "Value": [CLASS]},
                "00081155": {"vr": "UI", "Value": [f"1.2.3.{n}"]},
                "00081190": {"vr": "UR", "Value": [f"https://triage.example/v1/jobs/job-{n}"]},
            }
            for n in (1, 2)
        ],
    }
    json.dumps(body)


def test_some_stored_answers_202_with_the_failures_and_their_reasons():
    refused = DicomUnsupportedSopClassError(
        "no", sop_class_uid=samples.CT_IMAGE_SOP_CLASS, sop_instance_uid="1.2.3.9"
    )
    results = [
        stored(1),
        StowResult(failure=refused),
        StowResult(failure=StowUnsupportedMediaTypeError("no")),
    ]

    status, body = stow_response(results, retrieve_base="http://gw")

    assert status == 202
    assert [item["00081155"]["Value"] for item in body["00081199"]["Value"]] == [["1.2.3.1"]]
    assert body["00081198"] == {
        "vr": "SQ",
        "Value": [
            {
                "00081150": {"vr": "UI", "Value": [samples.CT_IMAGE_SOP_CLASS]},
                "00081155": {"vr": "UI", "Value": ["1.2.3.9"]},
                "00081197": {"vr": "US", "Value": [0x0122]},
            },
            {
                "00081150": {"vr": "UI"},
                "00081155": {"vr": "UI"},
                "00081197": {"vr": "US", "Value": [0xC000]},
            },
        ],
    }


def test_none_stored_answers_409():
    results = [StowResult(failure=DicomMalformedError("x")), StowResult(failure=DicomNoPixelsError("y"))]

    status, body = stow_response(results, retrieve_base="http://gw")

    assert status == 409
    assert "00081199" not in body
    assert [item["00081197"]["Value"] for item in body["00081198"]["Value"]] == [[0xC000], [0xA900]]


def test_the_job_id_is_escaped_in_the_retrieve_url():
    result = StowResult(sop_class_uid=CLASS, sop_instance_uid="1.2", job_id="a/b c")

    _, body = stow_response([result], retrieve_base="http://gw")

    assert body["00081199"]["Value"][0]["00081190"]["Value"] == ["http://gw/v1/jobs/a%2Fb%20c"]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (DicomUnsupportedSopClassError("x"), 0x0122),  # Referenced SOP Class not supported
        (DicomUnsupportedTransferSyntaxError("x"), 0xC122),  # Referenced Transfer Syntax not supported
        (DicomNoPixelsError("x"), 0xA900),  # Data Set does not match SOP Class
        (DicomMalformedError("x"), 0xC000),  # Cannot understand
        (StowMalformedError("x"), 0xC000),
        (StowUnsupportedMediaTypeError("x"), 0xC000),
        (CorruptImageError("x"), 0xC000),
        (DicomTooLargeError("x"), 0xA700),  # Refused out of Resources
        (UploadTooLargeError("x"), 0xA700),
        (ImageTooSmallError("x"), 0x0110),  # Processing failure
    ],
)
def test_failure_reasons_follow_ps3_18_table_i_2_2(error, reason):
    assert failure_reason(error) == reason

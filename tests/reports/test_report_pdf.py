"""The printable one-page report: rendered with reportlab, read back with pypdf as a reader's PDF
tool would, so every assertion is about what ends up on the page or in the file."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from io import BytesIO
from typing import cast

import pytest
from PIL import Image
from pypdf import PageObject, PdfReader
from pypdf.generic import ContentStream, DictionaryObject, StreamObject

from contracts.bundle import TriageLevel
from contracts.jobs import ImageMetadata, JobStatus
from contracts.ood import OodDecision, OodScoreResponse
from contracts.reports import DISCLAIMER, JobView, ModelRef, Prediction, ReportView
from contracts.reviews import NextStep, ReviewView
from services.reports.domain.report_pdf import ReportNotAvailableError, render_report_pdf

DISPLAY_NAMES = {
    "akiec": "Actinic keratosis",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "vasc": "Vascular lesion",
}
# Distinct percentages, none a substring of another, so each row is found unambiguously.
PROBABILITIES = {
    "akiec": 0.031,
    "bcc": 0.046,
    "bkl": 0.074,
    "df": 0.017,
    "mel": 0.618,
    "nv": 0.203,
    "vasc": 0.011,
}
EXPECTED_ROWS = [
    ("Melanoma", "mel", "61.8%"),
    ("Melanocytic nevus", "nv", "20.3%"),
    ("Benign keratosis", "bkl", "7.4%"),
    ("Basal cell carcinoma", "bcc", "4.6%"),
    ("Actinic keratosis", "akiec", "3.1%"),
    ("Dermatofibroma", "df", "1.7%"),
    ("Vascular lesion", "vasc", "1.1%"),
]
SHA256 = "0123456789abcdef" * 4
CREATED = datetime(2026, 12, 1, 8, 40, tzinfo=UTC)
COMPLETED = datetime(2026, 12, 1, 8, 43, tzinfo=UTC)
GENERATED = datetime(2026, 12, 2, 9, 15, tzinfo=UTC)
# The panel is ~248 x 176 pt; at the 200 dpi the renderer prints at, no side exceeds 689 px.
PRINT_BOX_PX = (689, 488)


def _picture(width: int, height: int, image_format: str) -> bytes:
    """A real image with a gradient, so encoders have something to encode."""
    picture = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buffer = BytesIO()
    picture.save(buffer, format=image_format)
    return buffer.getvalue()


def _overlay_png(width: int, height: int) -> bytes:
    """An RGBA overlay like model_bundle.heatmap renders: transparent except a warm blob."""
    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    overlay.paste((230, 40, 20, 180), (width // 4, height // 4, width // 2, height // 2))
    buffer = BytesIO()
    overlay.save(buffer, format="PNG")
    return buffer.getvalue()


JPEG = _picture(120, 90, "JPEG")
HEATMAP = _overlay_png(120, 90)


def _prediction(**changes: object) -> Prediction:
    fields: dict[str, object] = {
        "probabilities": PROBABILITIES,
        "top_class": "mel",
        "malignant_probability": 0.695,
        "triage_level": "urgent",
        "triage_threshold": 0.5,
        "conformal_set": ["mel", "nv"],
        "conformal_coverage": 0.9,
        "metadata_used": ["age", "body_site"],
        "class_display_names": DISPLAY_NAMES,
    }
    return Prediction.model_validate(fields | changes)


def _accepted_ood() -> OodScoreResponse:
    return OodScoreResponse(
        scores={"msp": 0.618, "entropy": 0.412},
        decision=OodDecision.accepted,
        thresholds={"msp_min": 0.3, "entropy_max": 0.8},
    )


def _job(
    status: JobStatus = JobStatus.done,
    *,
    prediction: Prediction | None = None,
    ood: OodScoreResponse | None = None,
    metadata: ImageMetadata | None = None,
    with_result: bool = True,
) -> JobView:
    result = None
    if with_result:
        prediction = prediction if prediction is not None or status != JobStatus.done else _prediction()
        result = ReportView(
            job_id="job_7f3a",
            status=status,
            triage_level=cast(TriageLevel, prediction.triage_level) if prediction is not None else None,
            prediction=prediction,
            ood=ood if ood is not None else _accepted_ood(),
            model=ModelRef(name="ham10000-effnet", version="2.1.0", sha256=SHA256),
            has_heatmap=prediction is not None,
            completed_at=COMPLETED,
        )
    return JobView(
        job_id="job_7f3a",
        batch_id=None,
        status=status,
        metadata=metadata or ImageMetadata(patient_ref="PAT-0042", body_site="back", age=54, sex="female"),
        created_at=CREATED,
        updated_at=COMPLETED,
        result=result,
    )


def _rejected_job(decision: OodDecision, rule: str, reasons: list[str]) -> JobView:
    ood = OodScoreResponse(
        scores={"msp": 0.21, "entropy": 0.93, "quality.laplacian_variance": 1.5},
        decision=decision,
        rule=rule,
        reasons=reasons,
        thresholds={"msp_min": 0.3, "entropy_max": 0.8, "quality.min_laplacian_variance": 3.0},
    )
    return _job(JobStatus.rejected, ood=ood)


def _render(
    job: JobView, *, image: bytes = JPEG, heatmap: bytes | None = HEATMAP, title: str = "SkinTriage report"
) -> bytes:
    return render_report_pdf(job, image=image, heatmap_png=heatmap, generated_at=GENERATED, title=title)


def _reader(pdf: bytes) -> PdfReader:
    return PdfReader(BytesIO(pdf))


def _text(pdf: bytes) -> str:
    """The page's text with whitespace runs collapsed: a paragraph may wrap anywhere."""
    return " ".join(_reader(pdf).pages[0].extract_text().split())


def _image_xobjects_by_name(pdf: bytes) -> tuple[PageObject, dict[str, StreamObject]]:
    page = _reader(pdf).pages[0]
    resources = cast(DictionaryObject, page["/Resources"])
    xobjects = cast(DictionaryObject, resources["/XObject"])
    images = {}
    for name in xobjects:
        xobject = cast(StreamObject, xobjects[name].get_object())
        if str(xobject["/Subtype"]) == "/Image":
            images[str(name)] = xobject
    return page, images


def _image_draws(pdf: bytes) -> list[tuple[float, float]]:
    """(width, height) in points of every image the page draws, from its `cm ... Do` operators."""
    page, images = _image_xobjects_by_name(pdf)
    matrix: list[float] = []
    draws = []
    for operands, operator in ContentStream(page.get_contents(), page.pdf).operations:
        if operator == b"cm":
            matrix = [float(value) for value in operands]
        elif operator == b"Do" and str(operands[0]) in images:
            draws.append((matrix[0], matrix[3]))
    return draws


def _image_xobjects(pdf: bytes) -> list[StreamObject]:
    return list(_image_xobjects_by_name(pdf)[1].values())


@pytest.fixture(scope="module")
def done_pdf() -> bytes:
    return _render(_job())


@pytest.fixture(scope="module")
def done_text(done_pdf: bytes) -> str:
    return _text(done_pdf)


def test_a_done_job_renders_as_a_single_pdf_page(done_pdf: bytes) -> None:
    assert done_pdf.startswith(b"%PDF-")
    pages = _reader(done_pdf).pages
    assert len(pages) == 1
    box = pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (595, 842)  # A4 in points


def test_the_header_names_the_job_patient_and_dates(done_text: str) -> None:
    assert "SkinTriage report" in done_text
    assert "job_7f3a" in done_text
    assert "Patient ref PAT-0042" in done_text
    assert "body site back, age 54, sex female" in done_text
    assert "Submitted 2026-12-01 08:40 UTC" in done_text
    assert "Completed 2026-12-01 08:43 UTC" in done_text
    assert "Generated 2026-12-02 09:15 UTC" in done_text


def test_dates_given_in_another_zone_print_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    job = _job().model_copy(update={"created_at": datetime(2026, 12, 1, 10, 40, tzinfo=plus_two)})
    pdf = render_report_pdf(
        job, image=JPEG, heatmap_png=None, generated_at=datetime(2026, 12, 2, 11, 15, tzinfo=plus_two)
    )
    text = _text(pdf)
    assert "Submitted 2026-12-01 08:40 UTC" in text
    assert "Generated 2026-12-02 09:15 UTC" in text


def test_a_missing_patient_ref_says_not_given() -> None:
    text = _text(_render(_job(metadata=ImageMetadata())))
    assert "Patient ref not given" in text
    assert "body site" not in text
    assert "Client ref" not in text


@pytest.mark.parametrize(
    ("level", "probability", "threshold", "wording"),
    [
        (
            "urgent",
            0.695,
            0.5,
            "Triage level: Urgent P(malignant) = 69.5%, at or above the urgent threshold of 50.0%",
        ),
        (
            "routine",
            0.237,
            0.1,
            "Triage level: Routine P(malignant) = 23.7%, at or above the routine threshold of 10.0%",
        ),
        (
            "monitor",
            0.042,
            0.1,
            "Triage level: Monitor P(malignant) = 4.2%, below the routine threshold of 10.0%",
        ),
    ],
)
def test_the_triage_level_is_given_in_words_with_its_threshold(
    level: str, probability: float, threshold: float, wording: str
) -> None:
    prediction = _prediction(
        triage_level=level, malignant_probability=probability, triage_threshold=threshold
    )
    assert wording in _text(_render(_job(prediction=prediction)))


def test_every_class_is_listed_with_its_display_name_and_percentage_most_likely_first(done_text: str) -> None:
    positions = []
    for name, code, percent in EXPECTED_ROWS:
        row = re.search(rf"{re.escape(name)} {code} {re.escape(percent)}", done_text)
        assert row is not None, f"no row for {name} {percent}"
        positions.append(row.start())
    assert positions == sorted(positions)


def test_a_class_without_a_display_name_shows_its_code() -> None:
    names = {code: name for code, name in DISPLAY_NAMES.items() if code != "df"}
    text = _text(_render(_job(prediction=_prediction(class_display_names=names))))
    assert "df df 1.7%" in text
    assert "Dermatofibroma" not in text


def test_the_conformal_set_is_named_with_its_coverage(done_text: str) -> None:
    assert "Melanoma, Melanocytic nevus: this set contains the true class with 90% coverage" in done_text


def test_a_fractional_coverage_keeps_its_decimal() -> None:
    text = _text(_render(_job(prediction=_prediction(conformal_coverage=0.925))))
    assert "with 92.5% coverage" in text


def test_the_ood_verdict_and_its_scores_are_shown(done_text: str) -> None:
    assert "Verdict: accepted" in done_text
    assert "Scores: msp 0.618, entropy 0.412" in done_text
    assert "Thresholds: msp_min 0.3, entropy_max 0.8" in done_text
    assert "Rule:" not in done_text


def test_the_model_is_named_with_its_version_and_a_short_hash(done_text: str) -> None:
    assert "ham10000-effnet, version 2.1.0 (sha256 0123456789ab)" in done_text
    assert SHA256[:13] not in done_text


def test_the_disclaimer_is_printed(done_text: str) -> None:
    assert DISCLAIMER in done_text
    assert "Decision support, not a diagnosis" in done_text


def test_a_report_with_its_own_disclaimer_prints_that_one() -> None:
    job = _job()
    assert job.result is not None
    result = job.result.model_copy(update={"disclaimer": "Read with care & check <twice>."})
    text = _text(_render(job.model_copy(update={"result": result})))
    assert "Read with care & check <twice>." in text
    assert DISCLAIMER not in text


def test_the_image_and_heatmap_are_drawn_side_by_side(done_pdf: bytes) -> None:
    assert len(_reader(done_pdf).pages[0].images) == 2
    draws = _image_draws(done_pdf)
    assert len(draws) == 2
    assert draws[0] == pytest.approx(draws[1])
    assert "No heatmap" not in _text(done_pdf)


def test_without_a_heatmap_only_the_image_is_drawn_and_the_page_says_so() -> None:
    pdf = _render(_job(), heatmap=None)
    assert len(_reader(pdf).pages[0].images) == 1
    assert "No heatmap" in _text(pdf)


@pytest.mark.parametrize(("width", "height"), [(60, 90), (160, 90), (1024, 768)])
def test_images_keep_their_aspect_ratio(width: int, height: int) -> None:
    pdf = _render(_job(), image=_picture(width, height, "PNG"), heatmap=_overlay_png(width, height))
    for drawn_width, drawn_height in _image_draws(pdf):
        assert drawn_width / drawn_height == pytest.approx(width / height, rel=0.02)


def test_a_png_image_is_printed_too() -> None:
    pdf = _render(_job(), image=_picture(200, 150, "PNG"))
    assert len(_reader(pdf).pages[0].images) == 2


def test_large_images_are_embedded_as_jpegs_no_larger_than_the_print_box() -> None:
    # Raw pixels, which reportlab compresses with zlib, and ASCII85 around any stream, which it
    # encodes in pure Python, made a report with a 1024 px image and heatmap take ~500 ms.
    pdf = _render(_job(), image=_picture(1024, 768, "PNG"), heatmap=_overlay_png(1024, 768))
    images = _image_xobjects(pdf)
    assert len(images) == 2
    for image in images:
        filters = image["/Filter"]
        filter_names = [str(name) for name in filters] if isinstance(filters, list) else [str(filters)]
        assert filter_names == ["/DCTDecode"]
        assert int(cast(int, image["/Width"])) <= PRINT_BOX_PX[0]
        assert int(cast(int, image["/Height"])) <= PRINT_BOX_PX[1]
    assert b"ASCII85Decode" not in pdf


def test_a_small_jpeg_is_embedded_unchanged() -> None:
    pdf = _render(_job(), heatmap=None)
    (image,) = _image_xobjects(pdf)
    assert image.get_data() == JPEG


def test_the_heatmap_panel_shows_the_overlay_on_the_image() -> None:
    pdf = _render(_job(), image=_picture(120, 90, "PNG"))
    pictures = [image.image for image in _reader(pdf).pages[0].images]
    assert all(picture is not None and picture.size == (120, 90) for picture in pictures)
    inside_blob, outside_blob = (45, 33), (5, 85)

    def is_red(picture: Image.Image | None) -> bool:
        assert picture is not None
        red, green, blue = cast(tuple[int, int, int], picture.convert("RGB").getpixel(inside_blob))
        return bool(red > green + 60 and red > blue + 60)

    (under_heatmap,) = [picture for picture in pictures if is_red(picture)]
    (lesion,) = [picture for picture in pictures if not is_red(picture)]
    assert lesion is not None and under_heatmap is not None
    # Outside the blob the overlay is transparent: the image shows through unchanged.
    assert under_heatmap.getpixel(outside_blob) == pytest.approx(lesion.getpixel(outside_blob), abs=8)


@pytest.mark.parametrize(
    ("decision", "rule", "reasons", "verdict"),
    [
        (
            OodDecision.rejected_quality,
            "quality",
            ["too_blurry"],
            "The image was rejected for image quality.",
        ),
        (
            OodDecision.rejected_ood,
            "msp+entropy",
            ["msp_below_min", "entropy_above_max"],
            "The image was rejected as not a dermoscopic image (out of distribution).",
        ),
    ],
)
def test_a_rejected_job_says_it_was_not_triaged_and_why(
    decision: OodDecision, rule: str, reasons: list[str], verdict: str
) -> None:
    pdf = _render(_rejected_job(decision, rule, reasons), heatmap=None)
    text = _text(pdf)
    assert len(_reader(pdf).pages) == 1
    assert "Not triaged" in text
    assert verdict in text
    assert f"Rule: {rule}" in text
    for reason in reasons:
        assert f"({reason})" in text
    assert "Scores: msp 0.21, entropy 0.93, quality.laplacian_variance 1.5" in text
    assert DISCLAIMER in text
    assert "PAT-0042" in text


def test_a_rejected_job_shows_no_triage_level_or_probabilities() -> None:
    text = _text(_render(_rejected_job(OodDecision.rejected_quality, "quality", ["too_dark"]), heatmap=None))
    assert "Triage level" not in text
    assert "P(malignant)" not in text
    assert "Class probabilities" not in text
    assert "Conformal" not in text
    for name, _, percent in EXPECTED_ROWS:
        assert name not in text
        assert percent not in text
    assert "too dark (too_dark)" in text


@pytest.mark.parametrize("status", [JobStatus.queued, JobStatus.running, JobStatus.failed])
def test_a_job_without_a_result_has_no_report(status: JobStatus) -> None:
    with pytest.raises(ReportNotAvailableError, match=status.value):
        _render(_job(status, with_result=False))


def test_a_failed_job_has_no_report_even_with_a_result_attached() -> None:
    job = _job().model_copy(update={"status": JobStatus.failed})
    with pytest.raises(ReportNotAvailableError):
        _render(job)


def test_report_not_available_is_a_value_error() -> None:
    assert issubclass(ReportNotAvailableError, ValueError)


def test_markup_in_client_supplied_text_is_printed_literally() -> None:
    patient_ref = '<b>P&1</b> <font color="red">x'
    client_ref = "A&B <br/> <unclosed"
    metadata = ImageMetadata(patient_ref=patient_ref, client_ref=client_ref, body_site="<i>arm</i>")
    text = _text(_render(_job(metadata=metadata)))
    assert f"Patient ref {patient_ref}" in text
    assert f"Client ref {client_ref}" in text
    assert "body site <i>arm</i>" in text


def test_markup_in_the_title_is_printed_literally() -> None:
    pdf = _render(_job(), title="Clinic <A&B> report")
    assert "Clinic <A&B> report Decision support, not a diagnosis." in _text(pdf)
    info = _reader(pdf).metadata
    assert info is not None and info.title == "Clinic <A&B> report"


def test_the_pdf_carries_title_author_subject_and_the_generation_date(done_pdf: bytes) -> None:
    info = _reader(done_pdf).metadata
    assert info is not None
    assert info.title == "SkinTriage report"
    assert info.author == "SkinTriage"
    assert info.subject is not None and "job_7f3a" in info.subject
    assert info.creation_date == GENERATED


def test_equal_inputs_give_equal_bytes(done_pdf: bytes) -> None:
    assert _render(_job()) == done_pdf
    later = render_report_pdf(_job(), image=JPEG, heatmap_png=HEATMAP, generated_at=GENERATED + timedelta(1))
    assert later != done_pdf


def test_many_classes_and_scores_still_fit_on_one_page() -> None:
    codes = [f"c{index:02d}" for index in range(40)]
    probabilities = {code: (index + 1) / 820 for index, code in enumerate(codes)}
    prediction = _prediction(
        probabilities=probabilities,
        top_class="c39",
        conformal_set=codes[-12:],
        class_display_names={code: f"Lesion class number {code}" for code in codes},
    )
    ood = OodScoreResponse(
        scores={f"quality.measure_{index}": index * 1.5 for index in range(40)},
        decision=OodDecision.accepted,
        thresholds={f"quality.limit_{index}": index * 2.5 for index in range(40)},
    )
    long_ref = "R" * 128
    pdf = _render(_job(prediction=prediction, ood=ood, metadata=ImageMetadata(patient_ref=long_ref)))
    text = _text(pdf)
    assert len(_reader(pdf).pages) == 1
    assert "Lesion class number c00" in text
    assert DISCLAIMER in text


@pytest.mark.parametrize("which", ["image", "heatmap"])
def test_bytes_that_are_not_an_image_are_refused(which: str) -> None:
    with pytest.raises(OSError):
        if which == "image":
            _render(_job(), image=b"not an image at all")
        else:
            _render(_job(), heatmap=b"\x89PNG\r\n\x1a\n truncated")


# ---- the clinician's review and the next step (issue 12) ----------------------------------------


def _signed_job(note: str | None = "Regular network; <b>benign</b> & stable.") -> JobView:
    job = _job()
    assert job.result is not None
    review = ReviewView.model_validate(
        {
            "review_id": "rev_1",
            "job_id": job.job_id,
            "version": 2,
            "reviewer": {"user_id": "usr_1", "name": "Dr Grace Hopper"},
            "triage_level": "monitor",
            "model_triage_level": "urgent",
            "agrees_with_model": False,
            "working_diagnosis": {"code": "nv", "text": None, "display_name": "Melanocytic nevus"},
            "note": note,
            "confirmed_diagnosis": {
                "code": "nv",
                "text": None,
                "display_name": "Melanocytic nevus",
                "basis": "histopathology",
                "malignant": False,
            },
            "created_at": datetime(2026, 12, 2, 8, 0, tzinfo=UTC),
        }
    )
    result = job.result.model_copy(
        update={
            "review": review,
            "review_state": "diagnosis_confirmed",
            "next_step": NextStep(triage_level="monitor", text="Re-image in 3 months and compare."),
        }
    )
    return job.model_copy(update={"result": result})


def test_a_signed_off_job_prints_the_clinicians_review_and_next_step() -> None:
    text = _text(_render(_signed_job()))

    assert "Signed off by Dr Grace Hopper on 2026-12-02 08:00 UTC (version 2): Monitor" in text
    assert "overriding the model's level (Urgent)" in text
    assert "Working diagnosis: Melanocytic nevus (nv)" in text
    assert "Confirmed diagnosis: Melanocytic nevus (nv) (not malignant; basis: histopathology)" in text
    assert "Note: Regular network; <b>benign</b> & stable." in text
    assert "Suggested next step (Monitor, the clinician's level): Re-image in 3 months and compare." in text
    assert len(_reader(_render(_signed_job())).pages) == 1


def test_an_unreviewed_job_says_so_and_suggests_the_models_next_step() -> None:
    job = _job()
    assert job.result is not None
    job.result.next_step = NextStep(
        triage_level="urgent", text="Refer for excision or biopsy within 2 weeks."
    )

    text = _text(_render(job))

    assert "Not yet reviewed" in text
    assert (
        "Suggested next step (Urgent, the model's level): Refer for excision or biopsy within 2 weeks."
        in text
    )

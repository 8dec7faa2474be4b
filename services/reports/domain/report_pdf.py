"""A printable one-page A4 PDF of one finished job, for the clinician's file.

The page holds what a reader needs to weigh the result: the image beside its heatmap, the triage
level with the threshold that decided it, every class probability, the conformal set, the OOD and
quality verdict, which model produced it, and the disclaimer. A rejected image gets the verdict
and why, never a triage level or probabilities. It is decision support, not a diagnosis, and the
page says so twice.

Every piece of text that came from a client (patient and client references, metadata) is escaped
before it reaches reportlab's Paragraph markup, which would otherwise parse `<b>` or `&` in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from xml.sax.saxutils import escape

from PIL import Image as PILImage
from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import inch, mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    KeepInFrame,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from contracts.jobs import ImageMetadata, JobStatus
from contracts.ood import OodDecision, OodScoreResponse
from contracts.reports import JobView, ModelRef, Prediction, ReportView

# ASCII85 wraps binary streams in 7-bit text, a transport nicety PDFs have long not needed: 25%
# larger, and without reportlab's optional C accelerator its pure-Python encoder spent ~60% of a
# report's time on the JPEGs of a textured 1024 px image. The setting is process-wide; nothing else
# in SkinTriage uses reportlab, and binary streams are what every PDF reader expects anyway.
rl_config.useA85 = 0

AUTHOR = "SkinTriage"
NOT_A_DIAGNOSIS = "Decision support, not a diagnosis."
SHA256_SHOWN = 12

_MARGIN = 15 * mm
_CONTENT_WIDTH = A4[0] - 2 * _MARGIN
_PANEL_GAP = 5 * mm
_PANEL_WIDTH = (_CONTENT_WIDTH - _PANEL_GAP) / 2
_PANEL_HEIGHT = 62 * mm
# Enough for a sharp print of a photograph at the panel's size; the stored image is often larger.
_PRINT_DPI = 200
_JPEG_QUALITY = 90
_CAPTION_HEIGHT = 12.0

_INK = colors.HexColor("#1f2933")
_MUTED = colors.HexColor("#52606d")
_RULE = colors.HexColor("#cbd2d9")
_BAND = colors.HexColor("#f0f4f8")
_LEVEL_COLOURS = {
    "urgent": colors.HexColor("#b42318"),
    "routine": colors.HexColor("#b54708"),
    "monitor": colors.HexColor("#027a48"),
}
_REJECTED_COLOUR = colors.HexColor("#6b21a8")

_VERDICT_WORDS = {
    OodDecision.accepted: "accepted",
    OodDecision.rejected_ood: "rejected as not a dermoscopic image (out of distribution)",
    OodDecision.rejected_quality: "rejected for image quality",
}
# The OOD service's machine-readable reasons (services/ood/domain/decision.py) in words; a reason
# not listed here is printed as its code alone.
_REASON_WORDS = {
    "too_small": "image too small",
    "too_dark": "too dark",
    "overexposed": "overexposed",
    "too_blurry": "too blurry",
    "uniform": "too uniform, too little contrast",
    "grayscale": "too little colour",
    "msp_below_min": "model confidence below its minimum",
    "entropy_above_max": "prediction too uncertain (entropy above its maximum)",
}
_LEVEL_COMPARISON = {
    "urgent": "at or above the urgent threshold of",
    "routine": "at or above the routine threshold of",
    "monitor": "below the routine threshold of",
}


class ReportNotAvailableError(ValueError):
    """The job has no result to print yet (queued or running), or never will (failed)."""


def render_report_pdf(
    job: JobView,
    *,
    image: bytes,
    heatmap_png: bytes | None,
    generated_at: datetime,
    title: str = "SkinTriage report",
) -> bytes:
    """One A4 page for a done or rejected job. Equal inputs give equal bytes (reportlab's
    invariant mode, with the PDF's creation date set to `generated_at`). Raises
    ReportNotAvailableError when the job has no result, and Pillow's error (an OSError such as
    PIL.UnidentifiedImageError) when the image or heatmap bytes are not a readable image."""
    report = job.result
    if report is None or job.status not in (JobStatus.done, JobStatus.rejected):
        raise ReportNotAvailableError(f"job {job.job_id} is {job.status.value}: it has no report to print")
    styles = _Styles.make()
    buffer = BytesIO()
    document = BaseDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=_MARGIN,
        rightMargin=_MARGIN,
        topMargin=_MARGIN,
        bottomMargin=_MARGIN + 6 * mm,
        title=title,
        author=AUTHOR,
        creator=AUTHOR,
        subject=f"Skin-lesion triage report for job {job.job_id}. {NOT_A_DIAGNOSIS}",
        invariant=1,
    )
    frame = Frame(
        document.leftMargin,
        document.bottomMargin,
        document.width,
        document.height,
        leftPadding=0,
        rightPadding=0,
        topPadding=0,
        bottomPadding=0,
    )
    footer = (
        f"{AUTHOR} · decision support, not a diagnosis · job {job.job_id} · "
        f"generated {_utc_text(generated_at)}"
    )
    document.addPageTemplates(
        [PageTemplate(id="report", frames=[frame], onPage=_page_decoration(footer, generated_at))]
    )
    story = _story(job, report, image, heatmap_png, generated_at, title, styles, document.width)
    # Shrinking rather than flowing onto a second page keeps the report one sheet even for a
    # bundle with many classes or an OOD verdict with many scores.
    document.build([KeepInFrame(document.width, document.height, story, mode="shrink", vAlign="TOP")])
    return buffer.getvalue()


@dataclass(frozen=True)
class _Styles:
    title: ParagraphStyle
    heading: ParagraphStyle
    body: ParagraphStyle
    small: ParagraphStyle
    label: ParagraphStyle
    level: ParagraphStyle
    notice: ParagraphStyle

    @classmethod
    def make(cls) -> _Styles:
        body = ParagraphStyle("body", fontName="Helvetica", fontSize=9.5, leading=12.5, textColor=_INK)
        return cls(
            title=ParagraphStyle("title", parent=body, fontName="Helvetica-Bold", fontSize=17, leading=21),
            heading=ParagraphStyle(
                "heading", parent=body, fontName="Helvetica-Bold", fontSize=11, leading=14, spaceBefore=7
            ),
            body=body,
            small=ParagraphStyle("small", parent=body, fontSize=8, leading=10, textColor=_MUTED),
            label=ParagraphStyle("label", parent=body, fontName="Helvetica-Bold", textColor=_MUTED),
            level=ParagraphStyle("level", parent=body, fontName="Helvetica-Bold", fontSize=14, leading=18),
            notice=ParagraphStyle("notice", parent=body, fontSize=8.5, leading=11),
        )

    def coloured_level(self, colour: colors.Color) -> ParagraphStyle:
        return ParagraphStyle("coloured_level", parent=self.level, textColor=colour)


def _story(
    job: JobView,
    report: ReportView,
    image: bytes,
    heatmap_png: bytes | None,
    generated_at: datetime,
    title: str,
    styles: _Styles,
    width: float,
) -> list[Flowable]:
    story: list[Flowable] = [
        Paragraph(escape(title), styles.title),
        Paragraph(escape(NOT_A_DIAGNOSIS), styles.small),
        Spacer(1, 3 * mm),
        _header_table(job, report, generated_at, styles, width),
        Spacer(1, 4 * mm),
        _ImagePair(_panel_images(image, heatmap_png)),
    ]
    prediction = report.prediction
    if report.status == JobStatus.done and prediction is not None:
        story += _triage_section(prediction, styles, width)
        story += _review_section(report, styles)
    else:
        story += _not_triaged_section(report, styles)
    story += _ood_section(report.ood, styles)
    story += [
        Paragraph("Model", styles.heading),
        Paragraph(_model_text(report.model), styles.body),
        Spacer(1, 4 * mm),
        _disclaimer_box(report.disclaimer, styles, width),
    ]
    return story


def _header_table(
    job: JobView, report: ReportView, generated_at: datetime, styles: _Styles, width: float
) -> Table:
    metadata = job.metadata
    left = [
        ("Job", job.job_id),
        ("Patient ref", metadata.patient_ref if metadata.patient_ref is not None else "not given"),
    ]
    if metadata.client_ref is not None:
        left.append(("Client ref", metadata.client_ref))
    clinical = _clinical_text(metadata)
    if clinical:
        left.append(("Clinical", clinical))
    right = [
        ("Submitted", _utc_text(job.created_at)),
        ("Completed", _utc_text(report.completed_at)),
        ("Generated", _utc_text(generated_at)),
    ]
    rows = []
    for index in range(max(len(left), len(right))):
        row: list[Paragraph | str] = []
        for column in (left, right):
            if index < len(column):
                label, value = column[index]
                row += [Paragraph(escape(label), styles.label), Paragraph(escape(value), styles.body)]
            else:
                row += ["", ""]
        rows.append(row)
    label_width = 24 * mm
    value_width = width / 2 - label_width
    table = Table(rows, colWidths=[label_width, value_width, label_width, value_width], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("BACKGROUND", (0, 0), (-1, -1), _BAND),
                ("LEFTPADDING", (0, 0), (-1, -1), 4),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return table


def _clinical_text(metadata: ImageMetadata) -> str:
    parts = []
    if metadata.body_site is not None:
        parts.append(f"body site {metadata.body_site}")
    if metadata.age is not None:
        parts.append(f"age {metadata.age}")
    if metadata.sex is not None:
        parts.append(f"sex {metadata.sex}")
    return ", ".join(parts)


class _ImagePair(Flowable):  # type: ignore[misc]  # reportlab ships no type hints
    """Two equal panels: the image, and the image under its heatmap (or "No heatmap")."""

    def __init__(self, panels: _PanelImages) -> None:
        super().__init__()
        self._panels = panels

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return _CONTENT_WIDTH, _PANEL_HEIGHT + _CAPTION_HEIGHT

    def draw(self) -> None:
        canvas: Canvas = self.canv
        right_x = _PANEL_WIDTH + _PANEL_GAP
        self._draw_panel(canvas, 0.0, self._panels.lesion, "Image")
        if self._panels.heatmap is None:
            _draw_outline(canvas, right_x)
            canvas.setFont("Helvetica", 10)
            canvas.setFillColor(_MUTED)
            canvas.drawCentredString(
                right_x + _PANEL_WIDTH / 2, _CAPTION_HEIGHT + _PANEL_HEIGHT / 2, "No heatmap"
            )
            _draw_caption(canvas, right_x, "Heatmap: not available for this job")
        else:
            self._draw_panel(canvas, right_x, self._panels.heatmap, "Heatmap: where the model looked")

    @staticmethod
    def _draw_panel(canvas: Canvas, x: float, jpeg: bytes, caption: str) -> None:
        _draw_outline(canvas, x)
        canvas.drawImage(
            ImageReader(BytesIO(jpeg)),
            x + 1,
            _CAPTION_HEIGHT + 1,
            _PANEL_WIDTH - 2,
            _PANEL_HEIGHT - 2,
            preserveAspectRatio=True,
            anchor="c",
        )
        _draw_caption(canvas, x, caption)


def _draw_outline(canvas: Canvas, x: float) -> None:
    canvas.setStrokeColor(_RULE)
    canvas.setLineWidth(0.6)
    canvas.rect(x, _CAPTION_HEIGHT, _PANEL_WIDTH, _PANEL_HEIGHT, stroke=1, fill=0)


def _draw_caption(canvas: Canvas, x: float, text: str) -> None:
    canvas.setFont("Helvetica", 8)
    canvas.setFillColor(_MUTED)
    canvas.drawCentredString(x + _PANEL_WIDTH / 2, 3, text)


@dataclass(frozen=True)
class _PanelImages:
    """JPEG bytes for the two panels, at most the panel's size at print resolution."""

    lesion: bytes
    heatmap: bytes | None


def _panel_images(image: bytes, heatmap_png: bytes | None) -> _PanelImages:
    """The panels' pictures, made small before reportlab sees them: reportlab compresses raw
    pixels with zlib for anything but a JPEG, ~60 ms for one 1024 px image, while a JPEG of the
    panel's size passes through as it is. The heatmap PNG is an RGBA overlay sized to the image,
    so it is laid over the image here; an opaque heatmap simply covers it."""
    box = (round(_PANEL_WIDTH / inch * _PRINT_DPI), round(_PANEL_HEIGHT / inch * _PRINT_DPI))
    with PILImage.open(BytesIO(image)) as source:
        unchanged = (
            source.format == "JPEG"
            and source.mode in ("RGB", "L")
            and source.width <= box[0]
            and source.height <= box[1]
        )
        source.draft(None, box)  # a JPEG decodes straight at 1/2, 1/4 or 1/8 scale when that suffices
        lesion = source.convert("RGB")
    lesion.thumbnail(box)
    lesion_jpeg = image if unchanged else _jpeg(lesion)
    if heatmap_png is None:
        return _PanelImages(lesion_jpeg, None)
    with PILImage.open(BytesIO(heatmap_png)) as overlay_source:
        # Stretched, not fitted: the overlay covers the whole image whatever its own pixel size.
        overlay = overlay_source.convert("RGBA").resize(lesion.size, PILImage.Resampling.BILINEAR)
    under_heatmap = PILImage.alpha_composite(lesion.convert("RGBA"), overlay).convert("RGB")
    return _PanelImages(lesion_jpeg, _jpeg(under_heatmap))


def _jpeg(picture: PILImage.Image) -> bytes:
    buffer = BytesIO()
    picture.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue()


def _triage_section(prediction: Prediction, styles: _Styles, width: float) -> list[Flowable]:
    level = prediction.triage_level
    level_words = level.capitalize() if level else "Unknown"
    colour = _LEVEL_COLOURS.get(level, _INK)
    comparison = _LEVEL_COMPARISON.get(level, "decided by the threshold of")
    set_names = ", ".join(prediction.display_name(code) for code in prediction.conformal_set)
    coverage = _compact_percent(prediction.conformal_coverage)
    used = prediction.metadata_used
    return [
        Paragraph("Triage", styles.heading),
        Paragraph(f"Triage level: {escape(level_words)}", styles.coloured_level(colour)),
        Paragraph(
            f"P(malignant) = {_percent(prediction.malignant_probability)}, {comparison} "
            f"{_percent(prediction.triage_threshold)}.",
            styles.body,
        ),
        Paragraph(
            "Clinical data used by the model: "
            + ("not recorded" if used is None else ", ".join(used) if used else "none, image only")
            + ".",
            styles.small,
        ),
        Paragraph("Class probabilities", styles.heading),
        _probability_table(prediction, styles, width),
        Paragraph("Conformal prediction set", styles.heading),
        Paragraph(
            f"<b>{escape(set_names)}</b>: this set contains the true class with {coverage} coverage "
            f"(sets built this way include the true diagnosis for about {coverage} of images like "
            "those the model was calibrated on).",
            styles.body,
        ),
    ]


def _review_section(report: ReportView, styles: _Styles) -> list[Flowable]:
    """The clinician's sign-off (or that there is none yet) and the suggested next step."""
    review = report.review
    flowables: list[Flowable] = [Paragraph("Clinician's review", styles.heading)]
    if review is None:
        flowables.append(
            Paragraph("Not yet reviewed: the triage level above is the model's alone.", styles.body)
        )
    else:
        stance = (
            "confirming the model's level"
            if review.agrees_with_model
            else f"overriding the model's level ({review.model_triage_level.capitalize()})"
        )
        flowables.append(
            Paragraph(
                f"Signed off by <b>{escape(review.reviewer.name)}</b> on {_utc_text(review.created_at)} "
                f"(version {review.version}): <b>{escape(review.triage_level.capitalize())}</b>, {stance}.",
                styles.body,
            )
        )
        if review.working_diagnosis is not None:
            working = review.working_diagnosis
            words = _diagnosis_text(working.code, working.text, working.display_name)
            flowables.append(Paragraph(f"Working diagnosis: {escape(words)}", styles.body))
        if review.confirmed_diagnosis is not None:
            confirmed = review.confirmed_diagnosis
            nature = "malignant" if confirmed.malignant else "not malignant"
            words = _diagnosis_text(confirmed.code, confirmed.text, confirmed.display_name)
            basis = confirmed.basis.value.replace("_", " ")
            flowables.append(
                Paragraph(
                    f"Confirmed diagnosis: {escape(words)} ({nature}; basis: {escape(basis)})", styles.body
                )
            )
        if review.note:
            flowables.append(Paragraph(f"Note: {escape(review.note)}", styles.body))
    if report.next_step is not None:
        whose = "the clinician's" if review is not None else "the model's"
        flowables.append(
            Paragraph(
                f"Suggested next step ({escape(report.next_step.triage_level.capitalize())}, {whose} level): "
                f"<b>{escape(report.next_step.text)}</b>",
                styles.body,
            )
        )
    return flowables


def _diagnosis_text(code: str | None, text: str | None, display_name: str | None) -> str:
    named = f"{display_name or code} ({code})" if code else ""
    return "; ".join(part for part in (named, text) if part)


def _probability_table(prediction: Prediction, styles: _Styles, width: float) -> Table:
    ranked = sorted(prediction.probabilities.items(), key=lambda item: (-item[1], item[0]))
    in_set = set(prediction.conformal_set)
    rows: list[list[Paragraph | str]] = [["Class", "Code", "Probability", "In conformal set"]]
    rows += [
        [
            Paragraph(escape(prediction.display_name(code)), styles.body),
            Paragraph(escape(code), styles.body),
            _percent(probability),
            "yes" if code in in_set else "",
        ]
        for code, probability in ranked
    ]
    table = Table(rows, colWidths=[width * 0.42, width * 0.16, width * 0.18, width * 0.24], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("FONTSIZE", (0, 0), (-1, -1), 9.5),
                ("TEXTCOLOR", (0, 0), (-1, -1), _INK),
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, _INK),
                ("LINEBELOW", (0, 1), (-1, -1), 0.3, _RULE),
                ("ALIGN", (2, 0), (2, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("BACKGROUND", (0, 1), (-1, 1), _BAND),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
            ]
        )
    )
    return table


def _not_triaged_section(report: ReportView, styles: _Styles) -> list[Flowable]:
    ood = report.ood
    why = (
        f"The image was {_VERDICT_WORDS[ood.decision]}."
        if ood is not None and ood.decision != OodDecision.accepted
        else "No prediction was stored for it."
    )
    return [
        Paragraph("Triage", styles.heading),
        Paragraph("Not triaged", styles.coloured_level(_REJECTED_COLOUR)),
        Paragraph(
            f"{escape(why)} No triage level or class probabilities are given for it; "
            "take or submit a new dermoscopic image, or assess the lesion clinically.",
            styles.body,
        ),
    ]


def _ood_section(ood: OodScoreResponse | None, styles: _Styles) -> list[Flowable]:
    heading = Paragraph("Image check (out-of-distribution and quality)", styles.heading)
    if ood is None:
        return [heading, Paragraph("No image check was recorded for this job.", styles.body)]
    flowables: list[Flowable] = [
        heading,
        Paragraph(f"Verdict: <b>{escape(_VERDICT_WORDS[ood.decision])}</b>", styles.body),
    ]
    if ood.decision != OodDecision.accepted:
        reasons = "; ".join(_reason_text(reason) for reason in ood.reasons) or "none given"
        flowables += [
            Paragraph(f"Rule: {escape(ood.rule or 'not given')}", styles.body),
            Paragraph(f"Reasons: {escape(reasons)}", styles.body),
        ]
    if ood.scores:
        flowables.append(Paragraph(f"Scores: {escape(_number_list(ood.scores))}", styles.small))
    if ood.thresholds:
        flowables.append(Paragraph(f"Thresholds: {escape(_number_list(ood.thresholds))}", styles.small))
    return flowables


def _reason_text(reason: str) -> str:
    words = _REASON_WORDS.get(reason)
    return f"{words} ({reason})" if words else reason


def _number_list(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in values.items())


def _model_text(model: ModelRef) -> str:
    return (
        f"{escape(model.name)}, version <b>{escape(model.version)}</b> "
        f"(sha256 {escape(model.sha256[:SHA256_SHOWN])})"
    )


def _disclaimer_box(disclaimer: str, styles: _Styles, width: float) -> Table:
    text = Paragraph(f"<b>{escape(NOT_A_DIAGNOSIS)}</b> {escape(disclaimer)}", styles.notice)
    box = Table([[text]], colWidths=[width], hAlign="LEFT")
    box.setStyle(
        TableStyle(
            [
                ("BOX", (0, 0), (-1, -1), 0.8, _MUTED),
                ("BACKGROUND", (0, 0), (-1, -1), _BAND),
                ("LEFTPADDING", (0, 0), (-1, -1), 6),
                ("RIGHTPADDING", (0, 0), (-1, -1), 6),
                ("TOPPADDING", (0, 0), (-1, -1), 5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
            ]
        )
    )
    return box


def _page_decoration(footer: str, generated_at: datetime) -> Callable[[Canvas, BaseDocTemplate], None]:
    pdf_date = _utc(generated_at).strftime("D:%Y%m%d%H%M%S+00'00'")

    def decorate(canvas: Canvas, document: BaseDocTemplate) -> None:
        # Invariant mode stamps a fixed date in 2000; the report's own generation time is the
        # date a reader expects in the PDF's properties, and it keeps equal inputs byte-equal.
        canvas.setDateFormatter(lambda *_: pdf_date)
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(_MUTED)
        canvas.drawString(document.leftMargin, _MARGIN, footer)
        canvas.restoreState()

    return decorate


def _utc(moment: datetime) -> datetime:
    # A naive datetime is taken to be UTC, as the services store them.
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _utc_text(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%d %H:%M UTC")


def _percent(probability: float) -> str:
    return f"{probability * 100:.1f}%"


def _compact_percent(fraction: float) -> str:
    # Coverage targets are round numbers (90%, 95%); a trailing ".0" would only add noise.
    return f"{round(fraction * 100, 1):g}%"

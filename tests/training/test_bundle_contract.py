"""bundle.json is validated by contracts.bundle.BundleManifest: bad bundles fail loudly."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts.bundle import BundleManifest
from model_bundle.loader import BundleError, load_manifest
from tests.fixtures.tiny_bundle import V2_RULE, V2_THRESHOLDS, manifest_dict, manifest_dict_v2

VALID = manifest_dict("a" * 64)


def _without(path: list[str]) -> dict[str, object]:
    body = copy.deepcopy(VALID)
    node: dict[str, object] = body
    for key in path[:-1]:
        node = node[key]  # type: ignore[assignment]
    del node[path[-1]]
    return body


def test_valid_manifest_parses_with_class_order_and_malignant_indices() -> None:
    manifest = BundleManifest.model_validate(VALID)
    assert manifest.class_codes == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert manifest.malignant_indices == (0, 1, 4)


@pytest.mark.parametrize(
    "missing",
    [
        ["temperature"],
        ["onnx_sha256"],
        ["triage", "urgent_malignant_probability"],
        ["preprocessing", "mean"],
        ["conformal", "quantile"],
    ],
)
def test_missing_field_is_rejected_naming_the_field(missing: list[str]) -> None:
    with pytest.raises(ValidationError) as err:
        BundleManifest.model_validate(_without(missing))
    assert any(tuple(e["loc"]) == tuple(missing) for e in err.value.errors())


def test_input_shape_inconsistent_with_crop_size_is_rejected() -> None:
    body = copy.deepcopy(VALID)
    body["io"]["input_shape"] = [None, 3, 64, 64]  # type: ignore[index]
    with pytest.raises(ValidationError, match="input_shape"):
        BundleManifest.model_validate(body)


def test_duplicate_class_codes_are_rejected() -> None:
    body = copy.deepcopy(VALID)
    body["classes"][1]["code"] = "akiec"  # type: ignore[index]
    with pytest.raises(ValidationError, match="unique"):
        BundleManifest.model_validate(body)


def test_routine_threshold_above_urgent_is_rejected() -> None:
    body = copy.deepcopy(VALID)
    body["triage"]["routine_malignant_probability"] = 0.9  # type: ignore[index]
    with pytest.raises(ValidationError, match="routine threshold"):
        BundleManifest.model_validate(body)


def test_bundle_without_any_malignant_class_is_rejected() -> None:
    body = copy.deepcopy(VALID)
    for c in body["classes"]:  # type: ignore[attr-defined]
        c["malignant"] = False
    with pytest.raises(ValidationError, match="malignant"):
        BundleManifest.model_validate(body)


def test_unknown_field_is_rejected() -> None:
    body = copy.deepcopy(VALID)
    body["tresholds"] = {}
    with pytest.raises(ValidationError):
        BundleManifest.model_validate(body)


def test_loader_refuses_a_model_whose_hash_differs_from_the_manifest(
    tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    copy_dir = tmp_path / "b"
    copy_dir.mkdir()
    for f in tiny_bundle_dir.iterdir():
        (copy_dir / f.name).write_bytes(f.read_bytes())
    body = json.loads((copy_dir / "bundle.json").read_text())
    body["onnx_sha256"] = "0" * 64
    (copy_dir / "bundle.json").write_text(json.dumps(body))
    with pytest.raises(BundleError, match="does not match"):
        load_manifest(copy_dir)


def test_loader_reports_a_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no bundle\.json"):
        load_manifest(tmp_path)


V2 = manifest_dict_v2("b" * 64, V2_THRESHOLDS, V2_RULE)


def test_a_format_2_manifest_parses_with_its_letterbox_metadata_and_robustness() -> None:
    manifest = BundleManifest.model_validate(V2)
    assert manifest.format_version == 2 and manifest.preprocessing.resize_policy == "letterbox"
    assert manifest.metadata is not None and manifest.io.metadata_input == "metadata"
    assert manifest.robustness is not None and manifest.ood_detector is not None


@pytest.mark.parametrize(
    "missing", [["metadata"], ["robustness"], ["ood_detector"], ["preprocessing", "colour_constancy"]]
)
def test_a_2_x_manifest_missing_one_of_its_new_fields_is_rejected(missing: list[str]) -> None:
    body = copy.deepcopy(V2)
    node: dict[str, object] = body
    for key in missing[:-1]:
        node = node[key]  # type: ignore[assignment]
    del node[missing[-1]]
    with pytest.raises(ValidationError, match=missing[-1]):
        BundleManifest.model_validate(body)


def test_a_2_x_version_cannot_claim_format_1_and_format_1_cannot_letterbox() -> None:
    with pytest.raises(ValidationError, match="format_version 2"):
        BundleManifest.model_validate({**copy.deepcopy(V2), "format_version": 1})
    body = copy.deepcopy(VALID)
    body["preprocessing"] = copy.deepcopy(V2["preprocessing"])
    body["io"]["input_shape"] = V2["io"]["input_shape"]  # type: ignore[index]
    with pytest.raises(ValidationError, match="format_version 1"):
        BundleManifest.model_validate(body)


def test_metadata_section_and_metadata_input_come_together() -> None:
    body = copy.deepcopy(V2)
    body["io"]["metadata_input"] = None  # type: ignore[index]
    with pytest.raises(ValidationError, match="metadata_input"):
        BundleManifest.model_validate(body)

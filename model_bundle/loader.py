"""Read a model bundle directory and check it is whole before anything serves from it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import ValidationError

from contracts.bundle import BundleManifest


class BundleError(Exception):
    """A bundle that is missing, malformed, or whose files do not match its manifest."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(bundle_dir: Path | str, verify_hash: bool = True) -> BundleManifest:
    """Parse and validate `bundle.json`; with verify_hash, check model.onnx's sha256 too."""
    root = Path(bundle_dir)
    manifest_path = root / "bundle.json"
    if not manifest_path.is_file():
        raise BundleError(f"no bundle.json in {root}")
    try:
        manifest = BundleManifest.model_validate(json.loads(manifest_path.read_text()))
    except (ValidationError, json.JSONDecodeError) as exc:
        raise BundleError(f"invalid {manifest_path}: {exc}") from exc
    onnx_path = root / manifest.onnx_file
    if not onnx_path.is_file():
        raise BundleError(f"bundle {root} names {manifest.onnx_file}, which does not exist")
    if verify_hash and sha256_file(onnx_path) != manifest.onnx_sha256:
        raise BundleError(f"{onnx_path} does not match onnx_sha256 in bundle.json")
    return manifest

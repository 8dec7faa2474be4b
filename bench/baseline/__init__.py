"""The baseline SkinTriage's fleet is measured against (bench/baseline/README.md)."""

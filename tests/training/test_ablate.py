"""The ablation verdicts: the full recipe wins against a variant when it is better on clean val
balanced accuracy or on the shifted-val AUC and at most 0.02 worse on the other."""

from __future__ import annotations

from typing import Any

from training.ablate import VARIANTS, table, verdicts


def _row(bal: float, shifted: float) -> dict[str, Any]:
    return {
        "val_balanced_accuracy": bal,
        "val_macro_auc": 0.9,
        "val_mel_nv_auc": 0.85,
        "shifted_val_mean_mel_nv_auc": shifted,
        "shifted_val_worst_mel_nv_auc": shifted - 0.05,
    }


def test_the_full_recipe_wins_on_either_axis_unless_it_loses_more_than_the_margin_on_the_other() -> None:
    results = {
        "full recipe": _row(0.70, 0.85),
        "better clean, same shift": _row(0.72, 0.85),  # the variant is better: full recipe does not win
        "worse shift only": _row(0.70, 0.80),  # full recipe wins on shift, ties clean
        "trade within margin": _row(0.715, 0.75),  # full recipe -0.015 clean, +0.10 shift: wins
        "trade beyond margin": _row(0.75, 0.75),  # full recipe -0.05 clean: not a win
    }
    decided = verdicts(results)
    assert decided["better clean, same shift"].startswith("full recipe does not win")
    assert decided["worse shift only"].startswith("full recipe wins")
    assert decided["trade within margin"].startswith("full recipe wins")
    assert decided["trade beyond margin"].startswith("full recipe does not win")
    lines = table(results, decided)
    assert len(lines) == 2 + len(results) and "reference" in lines[2]


def test_every_variant_changes_one_choice_of_the_recipe() -> None:
    assert VARIANTS["full recipe"] == []
    assert all(overrides for name, overrides in VARIANTS.items() if name != "full recipe")


def test_the_card_names_the_choices_the_ablation_does_not_support(tmp_path) -> None:
    import json

    from training.model_card import recipe_ablation_lines

    results = {"full recipe": _row(0.70, 0.85), "no shift aug": _row(0.75, 0.86), "no cc": _row(0.65, 0.84)}
    path = tmp_path / "ablations.json"
    path.write_text(json.dumps({**results, "_verdicts": verdicts(results)}))
    text = "\n".join(recipe_ablation_lines(path))
    assert "Not supported on `val` at this budget: **no shift aug**." in text
    assert "**no cc**" not in text

    supported = {"full recipe": _row(0.70, 0.85), "no cc": _row(0.65, 0.84)}
    path.write_text(json.dumps({**supported, "_verdicts": verdicts(supported)}))
    assert "Not supported" not in "\n".join(recipe_ablation_lines(path))

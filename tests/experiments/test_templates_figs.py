"""The templates of the explanations, landscape and figures modules: each compiles, an unknown key
is an error (never an empty title), and the phrasing a choice selects is the one rendered."""

import jinja2
import pytest

from experiments.report import explanations as E
from experiments.report import figures as F
from experiments.report import landscape as L
from experiments.report.templating import TEMPLATES, environment, lines


@pytest.mark.parametrize(
    "name",
    sorted(
        p.name
        for prefix in ("explanations_", "landscape_", "figures_")
        for p in TEMPLATES.glob(f"{prefix}*.j2")
    ),
)
def test_template_compiles(name):
    environment().get_template(name)


@pytest.mark.parametrize("text", [E.FIGURE_TEXT, L.FIGURE_TEXT, F.FIGURE_TEXT])
def test_unknown_figure_text_key_is_an_error(text):
    with pytest.raises(jinja2.UndefinedError):
        F.phrase(text, key="no such key")


def test_every_batch_norm_arm_has_its_description():
    cells = {a: F.phrase("explanations_batch_norm_arm.md.j2", arm=a) for a in
             ("ghost_large", "regime_large", "ghost_regime")}  # fmt: skip
    assert all(cells.values()) and len(set(cells.values())) == 3
    assert "\n" not in "".join(cells.values())


@pytest.mark.parametrize(
    ("highest", "at_end", "sentence"),
    [
        (0.3, 0.2, "No run comes within a factor of two of its threshold"),
        (1.2, 0.2, "Some runs come above the threshold early"),
        (0.7, 0.2, "Some runs come close to the threshold early"),
        (1.2, 0.9, "Runs end near their threshold"),
    ],
)
def test_edge_of_stability_sentence(highest, at_end, sentence):
    told = [{"arm": "a", "runs": 3, "above": 1, "peak": 0.5, "first": 2, "end": 0.25}]
    out = lines("landscape_captions.md.j2", figure="sharpness_history", made="x.png",
                data="x.csv", told=told, edge=L.edge_of_stability(highest, at_end),
                above=highest >= 1)  # fmt: skip
    assert out[0] == "![sharpness along training](figures/x.png)" and out[1] == "" and out[-1] == ""
    caption = out[2]
    assert len(out) == 4  # image, blank, one-line caption, the closing newline
    assert "a: above its threshold in 1 of 3 runs (peak a median 50% of it)" in caption
    assert f"threshold. {sentence}" in caption
    assert caption.endswith(" Data: `figures/x.csv`.*")
    assert "  " not in caption

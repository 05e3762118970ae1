"""The committed results read as the report says: every figure REPORT.md shows exists with the tidy
CSV of what it draws beside it, every figure in results/figures has one, and the correlation study's
figures hold the rows of its saved ranking (issue 15: figures read, never measure)."""

import re
from pathlib import Path

import pandas as pd
import pytest

from experiments.analyse.tune import read_rates, tune_hash
from experiments.plan import dependent, final_specs, load_protocol, run_dir, tuned_arms

RESULTS = Path(__file__).resolve().parents[1] / "results"
REPORT = RESULTS / "REPORT.md"
pytestmark = pytest.mark.skipif(not REPORT.exists(), reason="no committed report")


def test_every_figure_in_the_report_exists_with_its_data_beside_it():
    shown = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", REPORT.read_text())
    assert shown, "the report shows no figure"
    for figure in shown:
        png = RESULTS / figure
        assert png.read_bytes()[:4] == b"\x89PNG", figure
        data = pd.read_csv(png.with_suffix(".csv"))
        assert len(data) > 0, f"{figure}: its CSV is empty"


def test_every_saved_figure_is_one_the_report_shows():
    """So deleting results/figures and rerunning the report alone redraws every one of them."""
    shown = set(re.findall(r"\]\(figures/([^)]+\.png)\)", REPORT.read_text()))
    saved = {p.name for p in (RESULTS / "figures").glob("*.png")}
    assert saved - shown == set()


def test_every_saved_figure_has_its_csv():
    missing = [
        p.name for p in (RESULTS / "figures").glob("*.png") if not p.with_suffix(".csv").exists()
    ]
    assert missing == []


def test_the_study_figures_draw_the_saved_ranking():
    ranking = RESULTS / "tables" / "study_jiang_ranking.csv"
    if not ranking.exists():
        pytest.skip("the study has not been ranked")
    table = pd.read_csv(ranking)
    drawn = pd.read_csv(RESULTS / "figures" / "study_jiang_ranking.csv")
    assert list(drawn["measure"]) == list(table["measure"])
    assert drawn["cmi"].tolist() == pytest.approx(table["cmi"].tolist())
    models = pd.read_csv(RESULTS / "tables" / "study_jiang_models.csv")
    scatter = pd.read_csv(RESULTS / "figures" / "study_jiang_scatter.csv")
    for measure, part in scatter.groupby("measure"):
        assert sorted(part["value"]) == pytest.approx(sorted(models[f"metric.{measure}"].dropna()))


def _shown() -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(figures/([^)]+)\.png\)", REPORT.read_text())


def test_every_figure_is_captioned_and_its_runs_are_listed():
    text = REPORT.read_text()
    for figure in _shown():
        after = text.split(f"(figures/{figure}.png)")[1].lstrip("\n")
        assert after.startswith("*Figure"), f"{figure}: no caption under it"
    sources = pd.read_csv(RESULTS / "tables" / "figure_sources.csv")
    assert set(sources["figure"]) == set(_shown())
    assert (sources["run_id"].fillna("") != "").all(), "a drawn run not found in the runs tables"


def test_each_protocol_figure_draws_runs_at_their_criterion_with_their_own_train_loss():
    """Where a figure's CSV names arms and seeds, they are runs of its protocol; where it gives the
    run's training loss at the plotted point (the loss its title or legend quotes), it is the loss
    that run recorded, and the run met its criterion."""
    runs = pd.read_csv(RESULTS / "tables" / "protocol_runs.csv")
    protocols = sorted(set(runs["protocol"]), key=len, reverse=True)
    checked = 0
    for figure in _shown():
        protocol = next((p for p in protocols if figure.startswith(p + "_")), None)
        data = pd.read_csv(RESULTS / "figures" / f"{figure}.csv")
        if protocol is None or not {"arm", "seed"} <= set(data):
            continue
        mine = runs[runs["protocol"] == protocol].set_index(["arm", "seed"])
        drawn = data.drop_duplicates(["arm", "seed"]).set_index(["arm", "seed"])
        missing = set(drawn.index) - set(mine.index)
        assert not missing, f"{figure}: draws runs its protocol does not have: {missing}"
        if "run_train_loss" in drawn:
            checked += 1
            ours = mine.loc[drawn.index]
            assert drawn["run_train_loss"].tolist() == pytest.approx(ours["train_loss"].tolist())
            assert (ours["stop_reason"] == "train_until_loss").all(), figure
    assert checked >= 5, "fewer figures than expected quote their runs' training loss"


def test_the_committed_runs_keep_their_ids_and_the_searches_their_stamps():
    """A change to what a run id hashes would orphan every committed result: for every final run of
    an arm that starts from no other run's weights, the id the plan gives it now is the one
    ``protocol_runs.csv`` records; and each search table carries the stamp its protocol hashes to now
    (so ``./reproduce.sh`` reuses the committed rates and finds the runs it would train)."""
    tables = RESULTS / "tables"
    recorded = pd.read_csv(tables / "protocol_runs.csv")
    recorded = recorded.set_index(["protocol", "arm", "seed"])["run_dir"].map(
        lambda d: Path(d).name
    )
    checked = 0
    for name in sorted(set(recorded.index.get_level_values("protocol"))):
        p = load_protocol(name)
        if tuned_arms(p):
            stamps = set(pd.read_csv(tables / f"lr_{name}.csv")["tune_hash"].astype(str))
            assert stamps == {tune_hash(p)}, name
        arms = [a for a in p["arms"] if not dependent(p, a)]
        for spec in final_specs(p, read_rates(p, tables), {}, arms):
            assert run_dir(spec, {}).name == recorded[name, spec.arm, spec.seed], (name, spec.arm)
            checked += 1
    assert checked == 240, checked  # of the 300 committed runs; the other 60 continue others

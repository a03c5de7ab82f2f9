"""The explorer (notebook 07): its catalog of studies, its explanations against the
network's own predictions and the training preprocessing, its widgets driven without a
frontend, and the notebook itself under papermill on the smoke report's runs."""
from __future__ import annotations

import datetime

import numpy as np
import pytest

import mura_core as mc
from mura_core.data import build_cache, generate_synthetic
from mura_core.evaluation.predictions import split_inputs
from mura_core.experiments import store
from mura_core.report import explorer

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synthetic cache and two briefly trained models (their files carry the preprocessing)."""
    root = tmp_path_factory.mktemp("explorer")
    generate_synthetic(root, n_train=40, n_valid=24, seed=5)
    with pytest.warns(Warning):  # the generator truncates one file on purpose
        cache = build_cache(root, size=32, mode="pad", cache_dir=root / "cache", progress=False)
    spec = store.RunSpec(arch="baseline", seed=0, steps=3, batch_size=4, lr=0.01, momentum=0.9,
                         eval_every=3, train_eval_size=8)
    models = {}
    for arch in ("baseline", "residual"):
        run = store.train_or_load(spec.replace(arch=arch), cache, root / "runs", log=lambda m: None)
        models[arch] = mc.load_model(run.model_path)
    return cache, models


def test_the_catalog_groups_every_row_once_by_body_part_and_study(trained):
    cache, _ = trained
    valid = cache.split("valid")
    catalog = explorer.Catalog(valid)
    assert catalog.body_parts == sorted(set(valid.body_parts))
    seen = []
    for part in catalog.body_parts:
        for study in catalog.studies(part):
            rows = catalog.rows(study)
            assert rows == sorted(rows)
            assert {valid.study_ids[r] for r in rows} == {study}
            assert {valid.body_parts[r] for r in rows} == {part}
            assert len({valid.labels[r] for r in rows}) == 1, "a study has one label"
            seen += rows
    assert sorted(seen) == list(range(len(valid.labels)))
    row = seen[-1]
    study = catalog.study_of(row)
    record = valid.records[row]
    assert catalog.study_title(study).startswith(f"{record.patient} {record.study}, ")
    n = len(catalog.rows(study))
    assert catalog.image_title(row).startswith(f"image {catalog.rows(study).index(row) + 1} of {n}: ")
    with pytest.raises(KeyError, match="no study 'nowhere' in the valid split"):
        catalog.rows("nowhere")


def test_explanations_are_the_networks_own_predictions_with_maps_in_unit_range(trained):
    cache, models = trained
    valid = cache.split("valid")
    rows = [0, 3, 5]
    explained = explorer.explain_rows(models, valid, rows, cache.mean, cache.std)
    x = split_inputs(valid, rows, cache.mean, cache.std)
    for name, model in models.items():
        probs = model.predict_proba(x)
        assert [e.p_normal for e in explained[name]] == pytest.approx(probs.tolist(), abs=1e-6)
        for e in explained[name]:
            assert e.verdict == ("normal" if e.p_normal >= 0.5 else "abnormal")
            for m in explorer.MAPS:
                assert e.maps[m].shape == (32, 32) and e.maps[m].dtype == np.float32
                assert 0.0 <= e.maps[m].min() and e.maps[m].max() <= 1.0


def test_a_file_is_seen_exactly_as_its_cached_row_was_in_training(trained):
    cache, models = trained
    valid = cache.split("valid")
    row = 2
    image, from_file = explorer.explain_file(models, valid.records[row].path)
    np.testing.assert_array_equal(image, valid.images[row])
    from_cache = explorer.explain_rows(models, valid, [row], cache.mean, cache.std)
    for name in models:
        assert from_file[name].p_normal == pytest.approx(from_cache[name][0].p_normal, abs=1e-6)
        np.testing.assert_allclose(from_file[name].maps["Grad-CAM"],
                                   from_cache[name][0].maps["Grad-CAM"], atol=1e-5)


def test_an_upload_that_is_not_an_image_is_one_line_naming_it(trained):
    _, models = trained
    with pytest.raises(ValueError) as err:
        explorer.explain_upload(models, "elbow.png", b"not a picture")
    message = str(err.value)
    assert "\n" not in message and "elbow.png" in message and "PNG or JPEG" in message
    assert "mura-upload-" not in message, "the temporary copy is not what the user gave"


def test_the_figures_have_a_row_per_model_and_mark_the_image_shown(trained):
    cache, models = trained
    valid = cache.split("valid")
    ex = explorer.Explorer(models, valid, cache.mean, cache.std)
    normal, abnormal = ex.examples()
    assert valid.labels[normal] == 1 and valid.labels[abnormal] == 0
    figure, study = ex.row_figures(abnormal)
    assert len(figure.axes) == 2 * (1 + len(explorer.MAPS))
    titles = [ax.get_title(loc="left") for ax in figure.axes]
    assert any(t.startswith("baseline: P(normal) ") and "(label: abnormal)" in t for t in titles)
    assert any(t.startswith("residual: P(normal) ") for t in titles)
    rows = ex.catalog.rows(ex.catalog.study_of(abnormal))
    marked = [ax.get_title() for ax in study.axes if ax.get_title().startswith(">")]
    assert marked == [study.axes[rows.index(abnormal)].get_title()]
    assert "its verdict per model" in study._suptitle.get_text()


def _upload(name: str, content: bytes) -> dict:
    """A file as a FileUpload widget holds it once the browser has sent it."""
    return {"name": name, "type": "image/png", "size": len(content), "content": memoryview(content),
            "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)}


def test_the_widgets_follow_the_controls_without_a_frontend(trained):
    cache, models = trained
    valid = cache.split("valid")
    ex = explorer.Explorer(models, valid, cache.mean, cache.std)
    ex.widget(start=0)
    c = ex.controls
    first = bytes(c["picture"].value)  # an Image widget holds a memoryview
    assert first.startswith(PNG) and bytes(c["study_picture"].value).startswith(PNG)
    assert list(ex.selected()) == ["baseline", "residual"]
    other = next(p for p in ex.catalog.body_parts if p != valid.body_parts[0])
    c["body"].value = other
    assert [s for _, s in c["study"].options] == ex.catalog.studies(other)
    assert valid.body_parts[c["image"].value] == other
    assert bytes(c["picture"].value) != first, "a new body part shows one of its images"
    shown = bytes(c["picture"].value)
    c["compare"].value = None
    assert list(ex.selected()) == ["baseline"] and bytes(c["picture"].value) != shown
    c["upload"].value = (_upload("mine.txt", b"text"),)
    assert "mine.txt" in c["status"].value
    assert bytes(c["picture"].value).startswith(PNG), "a bad file leaves the last picture"
    with open(valid.records[1].path, "rb") as f:
        c["upload"].value = (_upload("mine.png", f.read()),)
    assert c["status"].value.startswith("mine.png: preprocessed as in training")
    assert bytes(c["study_picture"].value) == b""


def test_the_explorer_notebook_runs_under_papermill_on_the_reports_runs(smoke_report):
    import nbformat

    from mura_core.experiments import profiles
    from mura_core.report.pipeline import execute_notebook
    from mura_core.report.workspace import NOTEBOOKS_DIR

    tmp, _ = smoke_report
    executed = tmp / "explorer" / "07_explorer.ipynb"
    parameters = dict(profile="smoke", work_dir=str(tmp / "work"), out_dir=str(tmp / "explorer"),
                      figures_dir=str(tmp / "explorer" / "figures"))
    execute_notebook(NOTEBOOKS_DIR / f"{profiles.EXPLORER}.ipynb", executed, parameters)
    outputs = [o for cell in nbformat.read(str(executed), 4).cells if cell.cell_type == "code"
               for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "baseline (seed 0): reusing the completed run" in text
    assert "residual (seed 0): reusing the completed run" in text
    markdown = " ".join(o.data.get("text/markdown", "") for o in outputs if "data" in o)
    assert "Both were loaded from the run store" in markdown
    assert "No widget frontend here" in markdown
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4
    assert sorted(p.name for p in (tmp / "explorer" / "figures").glob("*.png")) == [
        "07_explorer_abnormal.png", "07_explorer_abnormal_study.png", "07_explorer_normal.png",
        "07_explorer_normal_study.png"]

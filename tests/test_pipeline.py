"""The report pipeline: papermill mechanics, profiles, provenance, and the end-to-end smoke
report (every notebook executed, every figure and JSON written, a PDF with images)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from mura_core.data import generate_synthetic
from mura_core.experiments import executors, profiles
from mura_core.nn.models import ARCHITECTURES
from mura_core.report import pipeline, provenance, workspace

ROOT = Path(__file__).resolve().parent.parent


def _notebook(path: Path, *sources: str, params: str = "value = 1") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, str(path))
    return path


# --------------------------------------------------------------------------- profiles


def test_every_profile_has_knobs_for_every_notebook():
    for profile in profiles.PROFILES.values():
        for name in profiles.NOTEBOOKS:
            assert isinstance(profile.notebook_knobs(name), dict)


def test_profiles_sizes():
    assert profiles.get_profile("quick").input_size == 64, "quick trains at 64 (README)"
    assert profiles.get_profile("quick").why, "the report's first page says why"
    assert profiles.get_profile("full").input_size == profiles.ASSIGNMENT_INPUT_SIZE == 227
    assert profiles.get_profile("full").notebook_knobs("04_architectures")["seeds"] >= 3
    assert profiles.get_profile("full").notebook_knobs("05_hyperparameters")["seeds"] >= 3
    for profile in profiles.PROFILES.values():
        assert profile.notebook_knobs("01_model")["network_size"] == 227
    assert profiles.get_profile("full").real_data
    assert profiles.get_profile("smoke").input_size < 64
    assert profiles.DEFAULT_PROFILE == "quick"


def test_sweep_centre_is_the_baseline_run_of_the_architecture_comparison():
    # 05 reuses 04's baseline run only when every setting agrees (02's too, unless the
    # profile trains section 2's baseline longer).
    for profile in profiles.PROFILES.values():
        train = profile.notebook_knobs("02_training")
        arch = profile.notebook_knobs("04_architectures")
        sweep = profile.notebook_knobs("05_hyperparameters")
        for key in ("batch_size", "lr", "momentum", "input_size", "eval_images", "steps",
                    "epochs", "eval_every", "evals_per_epoch", "warmup_steps", "schedule",
                    "weight_decay", "augment"):
            assert arch[key] == sweep[key], (profile.name, key)
            if key != "epochs":
                assert train[key] == arch[key], (profile.name, key)
        assert arch["batch_size"] in sweep["batch_sizes"]
        assert arch["lr"] in sweep["learning_rates"]
        assert arch["momentum"] in sweep["momenta"]
        assert (arch["steps"] is None) != (arch["epochs"] is None), "steps or epochs"


def test_the_report_profiles_train_what_the_comparisons_need():
    """Seeds in every comparison (at least 3 per architecture, 2 per sweep value; 3
    everywhere in full), 1,500 valid images or more, whole epochs in full, with
    augmentation, and section 2's baseline at least as long as the others."""
    quick, full = profiles.get_profile("quick"), profiles.get_profile("full")
    assert quick.notebook_knobs("04_architectures")["seeds"] >= 3
    assert quick.notebook_knobs("05_hyperparameters")["seeds"] >= 2
    assert quick.synthetic_valid >= 1500
    for name in ("04_architectures", "05_hyperparameters"):
        knobs = full.notebook_knobs(name)
        assert knobs["seeds"] >= 3 and knobs["epochs"] >= 3 and knobs["augment"]
    assert full.notebook_knobs("02_training")["epochs"] >= full.notebook_knobs(
        "04_architectures")["epochs"]


def test_a_profile_of_epochs_trains_whole_epochs_evaluated_where_it_says(tmp_path):
    from mura_core.report.context import open_notebook

    data = tmp_path / "data"
    generate_synthetic(data, n_train=40, n_valid=12, seed=1, progress=False)
    ctx = open_notebook("04_architectures", profile="smoke", data_dir=str(data),
                        work_dir=str(tmp_path / "work"), out_dir=str(tmp_path / "out"),
                        figures_dir=str(tmp_path / "fig"), epochs=3, evals_per_epoch=2,
                        augment=True)
    n_train = len(ctx.cache.split("train").labels)
    per_epoch = n_train // ctx.settings["batch_size"]
    spec = ctx.run_spec()
    assert spec.steps == 3 * per_epoch and spec.eval_every == per_epoch // 2
    assert spec.augment and ctx.training_length() == f"3 epochs ({3 * per_epoch:,} steps)"
    with pytest.raises(TypeError, match="no knob"):
        open_notebook("04_architectures", profile="smoke", data_dir=str(data), epochz=3)


def test_notebook_settings_take_given_values_over_the_profile():
    settings = profiles.notebook_settings("02_training", "smoke", steps=7, lr=None)
    assert settings["steps"] == 7
    by_epochs = profiles.notebook_settings("02_training", "smoke", epochs=2)
    assert (by_epochs["epochs"], by_epochs["steps"]) == (2, None), "epochs replace steps"
    by_steps = profiles.notebook_settings("04_architectures", "full", steps=5)
    assert (by_steps["steps"], by_steps["epochs"]) == (5, None), "and steps replace epochs"
    assert settings["lr"] == profiles.get_profile("smoke").notebook_knobs("02_training")["lr"]
    with pytest.raises(TypeError, match="no knob"):
        profiles.notebook_settings("02_training", "smoke", stepz=3)
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.get_profile("huge")


def test_profile_knobs_are_copies():
    knobs = profiles.get_profile("smoke").notebook_knobs("04_architectures")
    knobs["architectures"].append("nonsense")
    assert "nonsense" not in profiles.get_profile("smoke").notebook_knobs(
        "04_architectures")["architectures"]


# --------------------------------------------------------------------------- papermill


def test_parameters_reach_the_notebook_and_executed_copies_are_kept(tmp_path):
    src = _notebook(tmp_path / "nb.ipynb",
                    "import json, pathlib\n"
                    "pathlib.Path(out).write_text(json.dumps("
                    "{'value': value, 'cwd': __import__('os').getcwd()}))",
                    params="value = 1\nout = None")
    out = tmp_path / "seen.json"
    executed = tmp_path / "executed" / "nb.ipynb"
    wall = pipeline.execute_notebook(src, executed, {"value": 42, "out": str(out)})
    assert json.loads(out.read_text())["value"] == 42
    assert wall > 0
    tags = [c.metadata.get("tags", []) for c in nbformat.read(str(executed), 4).cells]
    assert ["injected-parameters"] in tags


def test_a_failing_notebook_stops_the_pipeline_naming_notebook_cell_and_error(tmp_path):
    first = _notebook(tmp_path / "a_fails.ipynb", "x = 1", "raise ValueError('bad input 123')")
    second = _notebook(tmp_path / "b_after.ipynb",
                       "open(%r, 'w').write('ran')" % str(tmp_path / "second_ran"))
    paths = workspace.Paths.make(tmp_path / "out", tmp_path / "fig", tmp_path)
    with pytest.raises(workspace.PipelineError) as info:
        pipeline.run_notebooks([first, second], paths, lambda name: {}, log=lambda *a, **k: None)
    message = str(info.value)
    assert "a_fails.ipynb" in message
    assert "raise ValueError('bad input 123')" in message
    assert "ValueError: bad input 123" in message
    assert "cell 3 " in message  # parameters, x = 1, then the failing cell (counted from 1)
    executed = paths.executed / "a_fails.ipynb"
    assert str(executed) in message and executed.exists()
    outputs = [o for c in nbformat.read(str(executed), 4).cells if c.cell_type == "code"
               for o in c.get("outputs", [])]
    assert any(o.get("output_type") == "error" and o.get("ename") == "ValueError" for o in outputs)
    assert not (tmp_path / "second_ran").exists()


def test_missing_notebook_is_named(tmp_path):
    with pytest.raises(workspace.PipelineError, match="99_none.ipynb"):
        pipeline.notebook_paths(tmp_path, ["99_none"])


SMOKE = profiles.get_profile("smoke")


def test_notebook_parameters_pass_paths_and_profile_knobs(tmp_path):
    paths = workspace.Paths.make(tmp_path / "o", tmp_path / "f", tmp_path / "w")
    source = workspace.DataSource(root=tmp_path / "mura", synthetic=False)
    params = pipeline.notebook_parameters("02_training", SMOKE, source, "numpy", 5, paths)
    assert params["data_dir"] == str(tmp_path / "mura")
    assert params["seed"] == 5 and params["profile"] == "smoke"
    assert params["out_dir"] == str(tmp_path / "o")
    assert params["steps"] == profiles.get_profile("smoke").notebook_knobs("02_training")["steps"]
    synthetic = workspace.DataSource(root=tmp_path / "s", synthetic=True, seed=5)
    assert pipeline.notebook_parameters("01_model", SMOKE, synthetic, "numpy", 5,
                                        paths)["data_dir"] == str(tmp_path / "s")


def test_synthetic_data_is_generated_once_and_recognized_when_given(tmp_path):
    paths = workspace.Paths.make(tmp_path, tmp_path, tmp_path)
    logs = []
    first = workspace.prepare_data(None, SMOKE, 4, paths, log=logs.append)
    assert first.synthetic and first.seed == 4 and "generating" in logs[-2]
    again = workspace.prepare_data(None, SMOKE, 4, paths, log=logs.append)
    assert again == first and "using the synthetic set" in logs[-1]
    given = workspace.prepare_data(first.root / "MURA-v1.1", SMOKE, 0, paths)
    assert given.synthetic and given.seed == 4
    assert given.label == "synthetic data, seed 4"


@pytest.mark.parametrize("stale, reason", [
    (dict(generator_version=1), "generator version 1 instead of 2"),
    (dict(), "generator version unknown instead of 2"),  # written before markers had a version
    (dict(generator_version=2, seed=5), "seed 5 instead of 4"),
    (dict(generator_version=2, valid={"images": 15}), "valid images 15 instead of 16"),
])
def test_a_synthetic_set_from_another_generator_version_seed_or_count_is_regenerated(
        tmp_path, stale, reason):
    from mura_core.data.synthetic import GENERATOR_VERSION, MARKER_NAME

    assert GENERATOR_VERSION == 2
    paths = workspace.Paths.make(tmp_path, tmp_path, tmp_path)
    prof = profiles.get_profile("smoke")
    root = paths.synthetic_data("smoke", 4)
    old_image = root / "MURA-v1.1" / "train" / "old.png"
    old_image.parent.mkdir(parents=True)
    old_image.write_bytes(b"an image of the old generator")
    marker = {"generator": "mura_core.data.synthetic", "seed": 4,
              "train": {"images": prof.synthetic_train}, "valid": {"images": prof.synthetic_valid},
              **stale}
    (root / MARKER_NAME).write_text(json.dumps(marker))
    logs = []
    source = workspace.prepare_data(None, SMOKE, 4, paths, log=logs.append)
    assert source.root == root and source.seed == 4
    assert [line for line in logs if "out of date" in line] == [
        f"data: the synthetic set in {root} is out of date ({reason}); generating it again"]
    assert not old_image.exists()
    written = json.loads((root / MARKER_NAME).read_text())
    assert (written["generator_version"], written["seed"]) == (GENERATOR_VERSION, 4)
    assert (written["train"]["images"], written["valid"]["images"]) == (
        prof.synthetic_train, prof.synthetic_valid)
    workspace.prepare_data(None, SMOKE, 4, paths, log=logs.append)
    assert "using the synthetic set" in logs[-1]


def test_missing_mura_folder_gives_a_clear_error(tmp_path):
    paths = workspace.Paths.make(tmp_path, tmp_path, tmp_path)
    with pytest.raises(workspace.PipelineError, match="does not exist.*--data"):
        workspace.prepare_data(tmp_path / "nowhere", SMOKE, 0, paths)


def test_provenance_records_source_backend_seed_versions_commit_and_times(tmp_path):
    source = workspace.DataSource(root=tmp_path, synthetic=True, seed=7)
    runs = [pipeline.NotebookRun("01_model", tmp_path / "x.ipynb", 1.26)]
    prov = provenance.provenance(source, SMOKE, "numpy", 7, runs, total_s=3.0)
    assert prov["data_source"] == "synthetic data, seed 7"
    assert prov["backend"] == "numpy" and prov["device"].startswith("CPU")
    assert prov["seed"] == 7
    assert {"python", "numpy", "mura_core", "papermill", "nbconvert"} <= set(prov["versions"])
    assert prov["git_commit"]
    assert prov["notebooks"] == [{"name": "01_model", "wall_s": 1.3}]
    assert prov["executor"] == {"executor": "local", "workers": 1, "address": None}
    dask = {"executor": "dask", "scheduler": "local:2", "address": "tcp://127.0.0.1:4000",
            "workers": 2, "dashboard": None}
    rows = provenance.provenance_section(provenance.provenance(source, SMOKE, "numpy", 7, runs,
                                                               executor=dask))[1]["text/markdown"]
    assert "Dask, 2 worker(s), scheduler `tcp://127.0.0.1:4000` (a LocalCluster" in rows
    inside = provenance.provenance(workspace.DataSource(root=ROOT / "data" / "x", synthetic=True,
                                                     seed=7), SMOKE, "numpy", 7, runs)
    assert inside["data_root"] == "data/x", "paths inside the project are shown relative"
    json.dumps(prov)


# --------------------------------------------------------------------------- a report is replaced whole

FAKE_PARAMETERS = ("data_dir = None\nprofile = 'smoke'\nbackend = 'numpy'\nseed = 0\n"
                   "out_dir = None\nfigures_dir = None\nwork_dir = None")


def _fake_notebooks(folder: Path, version: str, fail: bool = False) -> Path:
    """01_model and 02_training stand-ins: each writes its results and a figure and shows a
    line of Markdown; 02 raises when ``fail``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("01_model", "02_training"):
        body = ("import json, pathlib\n"
                f"pathlib.Path(out_dir, 'results').mkdir(parents=True, exist_ok=True)\n"
                f"pathlib.Path(out_dir, 'results', '{name}.json')"
                f".write_text(json.dumps({{'version': '{version}'}}))\n"
                f"pathlib.Path(figures_dir).mkdir(parents=True, exist_ok=True)\n"
                f"pathlib.Path(figures_dir, '{name}_curve.png').write_text('{version}')\n"
                "from IPython.display import Markdown, display\n"
                f"display(Markdown('{name} {version}'))")
        cells = [body] + (["raise ValueError('the build breaks')"] if fail and name == "02_training" else [])
        _notebook(folder / f"{name}.ipynb", *cells, params=FAKE_PARAMETERS)
    return folder


@pytest.fixture(scope="module")
def tiny_mura(tmp_path_factory):
    from mura_core.data import generate_synthetic

    root = tmp_path_factory.mktemp("tiny") / "data"
    generate_synthetic(root, n_train=8, n_valid=2, seed=0, workers=1)
    return root


def _report(tmp_path, tiny_mura, notebooks):
    return pipeline.run_report(profile="smoke", data=tiny_mura, out=tmp_path / "report",
                               figures=tmp_path / "figures", work=tmp_path / "work",
                               notebooks_dir=notebooks, only=["01_model", "02_training"],
                               progress=False, pdf=False, log=lambda *a, **k: None)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def test_a_failed_build_leaves_the_last_good_report_its_results_and_figures(tmp_path, tiny_mura):
    result = _report(tmp_path, tiny_mura, _fake_notebooks(tmp_path / "good", "v1"))
    out, figures = tmp_path / "report", tmp_path / "figures"
    assert result.outputs["html"] == out / "report.html" and "v1" in (out / "report.html").read_text()
    assert [r.executed for r in result.runs] == [out / "executed" / "01_model.ipynb",
                                                 out / "executed" / "02_training.ipynb"]
    assert (figures / "01_model_curve.png").read_text() == "v1"
    (out / "report.pdf").write_bytes(b"%PDF of the good report")  # as a build with XeLaTeX leaves
    report, pictures = _snapshot(out), _snapshot(figures)

    with pytest.raises(workspace.PipelineError, match="02_training.ipynb failed") as info:
        _report(tmp_path, tiny_mura, _fake_notebooks(tmp_path / "bad", "v2", fail=True))
    assert _snapshot(out) == report, "executed/, results/ and report.* all as they were"
    assert _snapshot(figures) == pictures
    failed = out / ".building-report" / "executed" / "02_training.ipynb"
    assert str(failed) in str(info.value) and failed.exists(), "the traceback stays readable"

    _report(tmp_path, tiny_mura, _fake_notebooks(tmp_path / "fixed", "v3"))
    assert "v3" in (out / "report.html").read_text()
    assert not (out / "report.pdf").exists(), "no old PDF beside the new HTML"
    assert json.loads((out / "results" / "02_training.json").read_text()) == {"version": "v3"}
    assert (figures / "02_training_curve.png").read_text() == "v3"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert (out / "results" / "provenance.json").exists()


def test_a_report_whose_work_folder_is_in_use_is_refused_before_any_work(tmp_path, tiny_mura):
    from test_locks import start_holder

    from mura_core.locks import FolderLocked

    holder = start_holder(tmp_path / "work")
    try:
        with pytest.raises(FolderLocked, match=rf"\(work folder\) is in use by process {holder.pid}"):
            _report(tmp_path, tiny_mura, _fake_notebooks(tmp_path / "nbs", "v1"))
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "work" / "cache").exists()
    assert not (tmp_path / "report" / "executed").exists()


def test_an_unwritable_report_folder_is_refused_in_one_line_before_any_work(tmp_path):
    from processes import cli, one_error_line

    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        done = cli("report", "--profile", "smoke", "--no-pdf", "--out", locked / "report",
                   "--figures", tmp_path / "figures", "--work", tmp_path / "work",
                   obey_permissions=True)
    finally:
        locked.chmod(0o755)
    assert done.returncode == 2
    assert f"cannot write the report folder {locked / 'report'}" in one_error_line(done.stderr)
    assert not (tmp_path / "work").exists() and not (tmp_path / "figures").exists()


# --------------------------------------------------------------------------- end to end

SMOKE_FIGURES = {
    "01_model": ["samples"],
    "02_training": ["loss"],
    "03_evaluation": ["accuracy", "confusion"],
    "04_architectures": ["curves"],
    "05_hyperparameters": ["batch_size", "learning_rate", "momentum"],
    "06_explanations": ["gradcam", "gradients", "roc"],
}


@pytest.mark.slow
def test_smoke_report_executes_every_notebook(smoke_report):
    tmp, stdout = smoke_report
    assert "generating a synthetic set" in stdout
    for name in profiles.NOTEBOOKS:
        executed = tmp / "report" / "executed" / f"{name}.ipynb"
        nb = nbformat.read(str(executed), 4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), f"{name}: a cell did not run"
        assert not [o for c in code for o in c.outputs if o.output_type == "error"]


@pytest.mark.slow
def test_smoke_report_writes_every_figure_as_png_and_pdf(smoke_report):
    tmp, _ = smoke_report
    for name, stems in SMOKE_FIGURES.items():
        for stem in stems:
            for ext in ("png", "pdf"):
                path = tmp / "figures" / f"{name}_{stem}.{ext}"
                assert path.exists() and path.stat().st_size > 1000, path


@pytest.mark.slow
def test_smoke_report_results_hold_sane_numbers(smoke_report):
    tmp, _ = smoke_report
    results = {n: json.loads((tmp / "report" / "results" / f"{n}.json").read_text())
               for n in profiles.NOTEBOOKS}
    for res in results.values():
        assert res["synthetic"] is True and res["data_source"] == "synthetic data, seed 0"

    model = results["01_model"]
    assert model["params"] > 0
    assert all(r["relative_error"] < 1e-5 for r in model["gradcheck"])

    training = results["02_training"]
    assert len(training["history"]["loss"]) == training["settings"]["steps"]
    assert all(0 < loss < 10 for loss in training["history"]["loss"])
    assert len(training["predictions"]) == training["settings"]["predict_images"]
    assert all(0 <= p["p_normal"] <= 1 for p in training["predictions"])

    evaluation = results["03_evaluation"]
    for split in ("train", "valid"):
        table = evaluation["metrics"][split]
        for key in ("image_accuracy", "patient_accuracy", "study_accuracy"):
            assert 0 <= table[key] <= 1, (split, key)

    assert evaluation["intervals"]["image_accuracy"]["value"] == \
        evaluation["metrics"]["valid"]["image_accuracy"]

    arch = results["04_architectures"]
    assert [r["name"] for r in arch["table"]] == list(ARCHITECTURES)
    assert len({r["steps"] for r in arch["table"]}) == 1, "every variant: the same steps"
    assert all(r["seeds"] == arch["seeds"] == 2 for r in arch["table"])
    assert all(0 <= r["image_accuracy"] <= 1 and r["params"] > 0 and r["seconds_per_step"] > 0
               and r["image_accuracy_low"] <= r["image_accuracy"] <= r["image_accuracy_high"]
               for r in arch["table"])
    assert [c["name"] for c in arch["comparisons"]] == list(ARCHITECTURES)[1:]
    assert "%" in arch["discussion"] and "95 % interval" in arch["discussion"]
    assert len(arch["runs"]) == 8 and arch["runs"][0]["seed"] == 0

    sweep = results["05_hyperparameters"]
    for knob in ("batch_size", "learning_rate", "momentum"):
        examples = {r["examples"] for r in sweep["sweeps"][knob]["rows"]}
        assert len(examples) == 1, f"{knob}: every run sees the same number of examples"
        assert "%" in sweep["sweeps"][knob]["discussion"]

    explained = results["06_explanations"]
    assert explained["layer"] == "conv6"
    for level in ("image", "study"):
        roc = explained["roc"][level]
        assert 0 <= roc["auc"] <= 1 and roc["fpr"][0] == 0 and roc["tpr"][-1] == 1
    assert roc["n"] == evaluation["metrics"]["valid"]["n_studies"]
    assert explained["roc"]["image"]["auc"] == pytest.approx(evaluation["metrics"]["valid"]["image_auc"])
    assert explained["body_parts"][-1]["body_part"] == "all"
    assert explained["body_parts"][-1]["value"] == pytest.approx(
        evaluation["metrics"]["valid"]["study_kappa"])
    located = explained["localization"]
    assert [r["sign"] for r in located["rows"]] == ["fracture", "implant", "all"]
    assert [r["sign"] for r in located["input_gradient"]] == ["fracture", "implant", "all"]
    assert located["abnormal_images"] == evaluation["metrics"]["valid"]["n_images"] - \
        evaluation["metrics"]["valid"]["n_normal_images"]

    prov = json.loads((tmp / "report" / "results" / "provenance.json").read_text())
    assert [n["name"] for n in prov["notebooks"]] == list(profiles.NOTEBOOKS)
    assert prov["data_source"] == "synthetic data, seed 0"
    executor = prov["executor"]["executor"]
    assert executor == ("processes" if executors.default_workers() > 1 else "local")
    trained = [r for r in arch["runs"] if not r["reused"]]
    who = "process " if executor == "processes" else "local"
    assert trained and all(r["worker"].startswith(who) and r["wall_s"] > 0 for r in trained)


@pytest.mark.slow
def test_smoke_report_html_shows_no_code(smoke_report):
    tmp, _ = smoke_report
    html = (tmp / "report" / "report.html").read_text()
    assert "open_notebook" not in html and "import mura_core" not in html
    assert "Provenance" in html and "synthetic data, seed 0" in html


@pytest.mark.slow
def test_smoke_report_pdf_has_pages_and_images(smoke_report):
    missing = [t for t in ("xelatex", "pandoc", "pdfimages") if shutil.which(t) is None]
    assert not missing, f"{', '.join(missing)} missing: run `make tex` (the PDF is required)"
    tmp, _ = smoke_report
    pdf = tmp / "report" / "report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    pages = int(next(ln.split()[-1] for ln in info.stdout.splitlines()
                     if ln.startswith("Pages:")))
    assert pages >= 5
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True,
                            check=True).stdout.splitlines()[2:]
    assert len([ln for ln in images if " image " in ln]) >= 8
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "open_notebook" not in text and "Provenance" in text

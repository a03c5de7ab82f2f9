"""``python -m mura_core explain``: one PNG per image, errors per file, the others still done."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mura_core as mc
from mura_core.__main__ import main
from mura_core.cli.explain import output_names
from mura_core.data import generate_synthetic, read_split
from mura_core.evaluation import saliency
from mura_core.evaluation.predictions import load_images, predict_images

pytestmark = pytest.mark.filterwarnings("ignore::mura_core.data.SkippedImageWarning")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("explain")
    generate_synthetic(base / "data", n_train=24, n_valid=12, seed=2, workers=1)
    out = base / "run"
    args = ["train", "--data", str(base / "data"), "--out", str(out), "--size", "32",
            "--width", "0.125", "--steps", "2", "--batch-size", "4", "--backend", "numpy",
            "--cache-dir", str(base / "cache"), "--workers", "1", "--no-progress"]
    assert main(args) == 0
    images = [r.path for r in read_split(base / "data", "valid")]
    return {"model": out / "last.npz", "images": images, "base": base}


def test_explain_writes_one_png_per_image_and_names_each_bad_file(trained, tmp_path, capsys):
    ones = [p for p in trained["images"] if Path(p).name == "image1.png"][:2]
    assert len(ones) == 2, "two images of the same name in different studies"
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    missing = tmp_path / "missing.png"
    out = tmp_path / "maps"
    status = main(["explain", "--model", str(trained["model"]), ones[0], str(text), ones[1],
                   str(missing), "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 1
    lines = [line.split("\t") for line in captured.out.strip().splitlines()]
    assert [line[0] for line in lines] == ones
    pngs = [Path(line[3]) for line in lines]
    assert len(set(pngs)) == 2 and all(p.parent == out and p.suffix == ".png" for p in pngs)
    for png in pngs:
        with Image.open(png) as img:
            assert img.size[0] > 300 and img.size[1] > 150
    expected = predict_images(mc.load_model(trained["model"]), ones)
    for (_path, prob, label, _), (_, p, _) in zip(lines, expected):
        assert float(prob) == pytest.approx(p, abs=1e-4)
        assert label == ("normal" if p >= 0.5 else "abnormal")
    err = captured.err.strip().splitlines()
    assert err[0].startswith(f"error: {text}: cannot be decoded as an image")
    assert err[1] == f"error: {missing}: no such file"
    assert err[2] == "2 of 4 files could not be explained"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in pngs)


def test_explain_maps_are_grad_cam_of_the_preprocessed_image(trained):
    model = mc.load_model(trained["model"])
    results, images, x = load_images(model, trained["images"][:3])
    assert all(error is None for _, error in results)
    assert images.shape == (3, 32, 32) and x.shape == (3, 1, 32, 32)
    pre = model.metadata["preprocessing"]
    np.testing.assert_allclose(x[:, 0], (images - pre["mean"]) / pre["std"], rtol=1e-5)
    maps = saliency.grad_cam(model, x)
    assert maps.shape == (3, 32, 32) and maps.max() <= 1.0


def test_explain_refuses_an_output_place_it_cannot_write_before_any_work(trained, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status = main(["explain", "--model", str(trained["model"]), trained["images"][0],
                   "--out", str(blocker / "maps")])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and "is a file" in err and "--out" in err
    status = main(["explain", "--model", str(tmp_path / "nope.npz"), trained["images"][0],
                   "--out", str(tmp_path / "maps")])
    assert status == 2 and not (tmp_path / "maps").exists()


def test_output_names_tell_apart_files_of_the_same_name():
    assert output_names(["a/x.png", "b/y.jpg"]) == ["x", "y"]
    assert output_names(["p1/study1/image1.png", "p2/study1/image1.png", "p2/study2/image1.png"]) \
        == ["p1_study1_image1", "p2_study1_image1", "p2_study2_image1"]
    assert output_names(["/data/a/image1.png", "/data/a/image1.png"]) == \
        ["data_a_image1", "data_a_image1-2"]

"""The benchmark harness: it runs on a tiny network, writes every field of its record, says
when PyTorch is absent, and its PyTorch twin computes what our network computes.
No test here asserts on a time."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mura_core as mc

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is not installed; it lives beside the package
    sys.path.insert(0, str(ROOT))
from benchmarks import bench_step  # noqa: E402

ROW_FIELDS = {"backend", "device", "threads", "batch", "size", "arch", "train_ms", "train_ms_min",
              "infer_ms", "infer_ms_min", "train_images_per_s", "infer_images_per_s", "peak_mb",
              "baseline_mb", "parameters", "last_loss"}


def test_harness_writes_record_and_tables_for_a_tiny_numpy_run(tmp_path):
    out = tmp_path / "run.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_step", "--size", "67", "--batch", "2",
         "--steps", "1", "--warmup", "0", "--backends", "numpy", "--threads", "1", "--layers",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| backend" in proc.stdout and "| numpy" in proc.stdout
    assert "per-layer breakdown, numpy" in proc.stdout

    record = json.loads(out.read_text())
    assert record["config"]["size"] == 67 and record["config"]["batch"] == 2
    assert record["machine"]["cores"] >= 1 and record["machine"]["numpy"] == np.__version__
    [row] = record["results"]
    assert ROW_FIELDS <= set(row)
    assert (row["backend"], row["batch"], row["size"], row["arch"], row["threads"]) == \
        ("numpy", 2, 67, "baseline", 1)
    assert row["train_ms"] > 0 and row["infer_ms"] > 0 and row["peak_mb"] >= row["baseline_mb"] > 0
    assert row["parameters"] == mc.build_model("baseline", input_size=67).num_parameters()
    assert len(row["train_ms_all"]) == 1

    layers = record["layers"]["numpy"]
    model = mc.build_model("baseline", input_size=67)
    # every layer of the step but the skipped output logistic, plus the loss and the update
    expected = {name for name, _ in model.body.layers} | {"loss", "sgd"}
    assert {r["name"] for r in layers} == expected
    assert sum(r["percent"] for r in layers) == pytest.approx(100.0)
    totals = [r["total_ms"] for r in layers]
    assert totals == sorted(totals, reverse=True)
    # FLOPs of the direct convolution: conv1 (7x7, 64 maps of 34x34 from 1 channel), no input
    # gradient; fc2 (2048 -> 1) computes both gradients
    by_name = {r["name"]: r for r in layers}
    assert by_name["conv1"]["forward_gflop"] == pytest.approx(2 * 2 * 64 * 34 * 34 * 49 / 1e9)
    assert by_name["conv1"]["backward_gflop"] == by_name["conv1"]["forward_gflop"]
    assert by_name["fc2"]["backward_gflop"] == pytest.approx(2 * 2 * 2 * 2048 / 1e9)
    assert {r["name"] for r in layers if "forward_gflops" in r} == \
        {"conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc1", "fc2"}
    assert "fwd GFLOP/s" in proc.stdout


def test_absent_pytorch_is_reported_and_our_numbers_still_printed(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench_step, "torch_version", lambda: None)
    code = bench_step.main(["--size", "67", "--batch", "2", "--steps", "1", "--warmup", "0",
                            "--threads", "1", "--backends", "numpy,torch-cpu",
                            "--json", str(tmp_path / "r.json")])
    text = capsys.readouterr().out
    assert code == 0
    assert "PyTorch is absent" in text and "make bench-deps" in text
    assert "| numpy" in text
    record = json.loads((tmp_path / "r.json").read_text())
    assert [s["backend"] for s in record["skipped"]] == ["torch-cpu"]


def test_ratios_pair_each_backend_with_its_pytorch_counterpart():
    def row(backend, train, infer, peak, **extra):
        return {"backend": backend, "train_ms": {"median": train}, "infer_ms": {"median": infer},
                "peak_mb": peak, **extra}

    rows = [row("numpy", 300.0, 100.0, 900.0), row("torch-cpu", 200.0, 50.0, 600.0),
            row("cupy", 30.0, 10.0, 2000.0, gpu_mb=800.0),
            row("torch-cuda", 10.0, 5.0, 3000.0, gpu_mb=400.0)]
    bench_step.add_ratios(rows)
    assert rows[0]["reference"] == "torch-cpu"
    assert (rows[0]["train_ratio"], rows[0]["infer_ratio"], rows[0]["memory_ratio"]) == (1.5, 2.0, 1.5)
    assert (rows[2]["train_ratio"], rows[2]["memory_ratio"], rows[2]["memory_ratio_of"]) == \
        (3.0, 2.0, "gpu_mb")
    assert "train_ratio" not in rows[1]


@pytest.mark.parametrize("arch", ["baseline", "deeper", "residual"])
def test_torch_twin_computes_what_our_network_computes(arch):
    torch = pytest.importorskip("torch")
    from benchmarks.torch_net import build_torch_net, copy_weights

    model = mc.build_model(arch, input_size=67, seed=0, dtype="float32")
    net = build_torch_net(arch, 67)
    assert sum(p.numel() for p in net.parameters()) == model.num_parameters()
    copy_weights(model, net)
    x, t = bench_step.make_batch(2, 67, seed=3)

    # evaluation mode (no dropout): same probabilities, same loss, same gradients
    net.eval()
    z = net(torch.from_numpy(x))
    np.testing.assert_allclose(torch.sigmoid(z).detach().numpy(), model.forward(x), rtol=1e-4,
                               atol=1e-5)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.from_numpy(t))
    loss.backward()
    ours, grads = mc.loss_and_grads(model, x, t, training=False)
    assert ours == pytest.approx(loss.item(), rel=1e-4)
    for (name, g), p in zip(grads.items(), net.parameters()):
        theirs = p.grad.numpy().T if g.ndim == 2 else p.grad.numpy()
        np.testing.assert_allclose(g, theirs, rtol=1e-3, atol=1e-5 * float(np.abs(theirs).max()),
                                   err_msg=name)


def test_torch_twin_initializes_at_our_scale():
    torch = pytest.importorskip("torch")
    from benchmarks.torch_net import build_torch_net

    net = build_torch_net("baseline", 67)
    model = mc.build_model("baseline", input_size=67)
    for (name, ours), theirs in zip(model.parameters().items(), net.parameters()):
        assert theirs.dtype == torch.float32
        if name.endswith(".W"):
            assert float(theirs.detach().std()) == pytest.approx(float(np.std(ours)), rel=0.2), name
        else:
            assert float(theirs.detach().abs().max()) == 0.0, name


def test_the_suite_counts_the_baselines_flops_as_its_layer_table_says():
    """Forward plus backward multiply-adds (x2) of the assignment's baseline at 227x227,
    written out from its layer shapes (the first convolution computes no input gradient)."""
    from benchmarks.bench_suite import step_flops

    b = 32
    convs = [  # (output channels, output side, input channels, kernel, input gradient)
        (64, 114, 1, 7, False), (128, 29, 64, 5, True), (256, 14, 128, 3, True),
        (384, 14, 256, 3, True), (256, 14, 384, 3, True), (256, 14, 256, 3, True)]
    total = 0.0
    for d, side, c, k, input_grad in convs:
        forward = 2.0 * b * d * side * side * c * k * k
        total += forward * (3 if input_grad else 2)
    for d_in, d_out in ((12544, 2048), (2048, 1)):
        total += 3 * 2.0 * b * d_in * d_out
    assert step_flops("baseline", 227, b) == pytest.approx(total, rel=1e-12)


def test_transform_share_counts_every_winograd_pass_of_a_step_and_restores_the_module():
    from benchmarks import bench_transforms
    from mura_core.nn import winograd

    originals = {name: getattr(winograd, name) for name in bench_transforms.TRANSFORMS}
    record = bench_transforms.measure("baseline", size=67, batch=2, steps=2, warmup=1)
    assert {name: getattr(winograd, name) for name in originals} == originals
    functions = record["functions"]
    # conv2 (5x5 stride 2 through space-to-depth) and conv3..conv6 (3x3 stride 1): five
    # Winograd convolutions, each with its four transforms per step; conv2's input is split
    # into phases inside the input transform, no separate space_to_depth call at stride 2
    for name in ("_transform_input", "_transform_output", "_transform_output_grad",
                 "_transform_input_grad"):
        assert functions[name]["calls"] == 5
        assert functions[name]["ms"] > 0 and functions[name]["one_pass_ms"] > 0
    spent = sum(f["ms"] for f in functions.values())
    assert 0 < spent < record["step_ms"] * 2  # each step's share, against the median step
    row = bench_transforms.summary_row(record)
    assert row[0] == "baseline" and len(row) == 7

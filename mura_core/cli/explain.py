"""``python -m mura_core explain --model MODEL IMAGE... --out DIR``.

For each image, one PNG in DIR: the radiograph as the network sees it (preprocessed as in
training), its Grad-CAM map over it (``saliency.grad_cam``) and P(normal) in the title; one
tab-separated line per image on stdout: path, P(normal), label, the PNG written.

Exit status (``cli``'s convention): 0 every image explained; 1 some files could not be read
(each named on stderr in one line; the others are still explained; DIR is made only when one
could); 2 bad input (the model file, an output folder that cannot be written).
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..files import check_writable_folder
from ..nn.backend import BACKENDS
from . import EXIT_FAILED, command


def output_names(paths) -> list[str]:
    """A distinct file stem per path: the file's stem, preceded by as many of its folders as
    it takes to tell apart paths that share a stem (MURA names every study's images
    ``image1.png`` ...), joined with ``_``."""
    parts = [Path(p).with_suffix("").parts for p in paths]
    names = [p[-1] for p in parts]
    depth = 1
    while len(set(names)) < len(names) and depth < max(len(p) for p in parts):
        depth += 1
        names = ["_".join(p[-depth:]).lstrip("/_") or "image" for p in parts]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):  # the very same path given twice
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name}-{seen[name]}"
    return names


def _explain(args) -> int:
    from ..evaluation import metrics
    from ..evaluation.predictions import load_images
    from ..evaluation.saliency import grad_cam, last_conv_layer
    from ..nn.serialization import load_model
    from ..plots import plot_explanation, save_figure

    out = Path(args.out)
    check_writable_folder(out, "--out folder")
    model = load_model(args.model, backend=args.backend)
    layer = args.layer or last_conv_layer(model)
    results, images, x = load_images(model, args.images)
    good = [path for path, error in results if error is None]
    if good:  # no empty --out folder when no image could be read
        maps = grad_cam(model, x, layer=layer, target=args.target)
        probs = model.predict_proba(x)
        out.mkdir(parents=True, exist_ok=True)
    else:
        maps = probs = []
    failed = 0
    written = iter(zip(output_names(good), images, maps, probs))
    for path, error in results:
        if error is not None:
            failed += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        name, image, heat, prob = next(written)
        label = metrics.CLASS_NAMES[int(prob >= metrics.THRESHOLD)]
        fig = plot_explanation(image, heat, f"{Path(path).name}: P(normal) {prob:.3f}, {label}",
                               map_name=f"Grad-CAM of {args.target} at {layer}")
        (png,) = save_figure(fig, out / f"{name}_gradcam", formats=("png",))
        print(f"{path}\t{prob:.4f}\t{label}\t{png}")
    if failed:
        print(f"{failed} of {len(results)} files could not be explained", file=sys.stderr)
    return EXIT_FAILED if failed else 0


def add_commands(subparsers) -> None:
    """Register ``explain``."""
    p = subparsers.add_parser(
        "explain", help="Grad-CAM maps of image files with a saved model",
        description="Writes one PNG per image into --out: the radiograph as the network sees "
                    "it, its Grad-CAM map and P(normal); prints one tab-separated line per "
                    "image (path, P(normal), label, PNG). Files that cannot be read get an "
                    "error line on stderr and the others are still explained; exit status 1 "
                    "if any failed.")
    p.add_argument("--model", required=True, help="a model file saved by train (best.npz, last.npz)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files, any size and mode")
    p.add_argument("--out", required=True, help="folder for the PNG files (created if missing)")
    p.add_argument("--target", choices=("abnormal", "normal"), default="abnormal",
                   help="the class whose evidence the map shows (default abnormal)")
    p.add_argument("--layer", default=None,
                   help="the convolution whose output is explained (default: the last one)")
    p.add_argument("--backend", choices=BACKENDS, default="numpy")
    p.set_defaults(func=command(_explain))

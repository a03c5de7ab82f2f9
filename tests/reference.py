"""Slow, obvious reference implementations (explicit loops, float64) for the tests: the
layers' are the grader's (``mura_core.course.references``), the image resize's is here."""
import numpy as np

from mura_core.course.references import (  # noqa: F401  (re-exported for the tests)
    conv2d_backward_reference,
    conv2d_reference,
    maxpool_backward_reference,
    maxpool_reference,
    numeric_grad,
    rel_error,
)


def bilinear_reference(image, out_h, out_w):
    """Bilinear resize of one 2-D image with half-pixel centres, as PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)`` documents it: loops over the output
    pixels, each reading its four neighbours."""
    in_h, in_w = image.shape
    out = np.zeros((out_h, out_w))

    def source(i, n_in, n_out):
        s = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        low = min(int(np.floor(s)), n_in - 1)
        return low, min(low + 1, n_in - 1), s - low

    for i in range(out_h):
        y0, y1, fy = source(i, in_h, out_h)
        for j in range(out_w):
            x0, x1, fx = source(j, in_w, out_w)
            top = (1 - fx) * image[y0, x0] + fx * image[y0, x1]
            bottom = (1 - fx) * image[y1, x0] + fx * image[y1, x1]
            out[i, j] = (1 - fy) * top + fy * bottom
    return out

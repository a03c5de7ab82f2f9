"""Judging a model: metrics (accuracy per image, patient and study; kappa; ROC), statistics
(bootstrap intervals, McNemar, comparisons over seeds), predictions of splits and image files,
what the report draws from them (``analysis``), and saliency maps."""

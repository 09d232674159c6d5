"""Parsing accuracy of predicted label maps against the ground truth: pixel accuracy and mean IoU.

Both come from one confusion matrix C summed over every pixel of every pair (C[t, p] = pixels of true class t
predicted as p):

    pixel accuracy = sum_k C[k, k] / sum C
    IoU_k          = C[k, k] / (sum_p C[k, p] + sum_t C[t, k] - C[k, k])
    mIoU           = mean of IoU_k over the classes k present in the ground truth (sum_p C[k, p] > 0)

A class the ground truth never shows is left out of the mean (its IoU is 0 or undefined, and says nothing about
the set); predicting it still costs the classes it was confused with through their false positives.
"""

from __future__ import annotations

import numpy as np
import torch


def confusion_matrix(predicted: torch.Tensor, truth: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(B,H,W) predicted and true integer labels in 0..num_labels-1 -> (K,K) int64 counts C[true, predicted]."""
    index = truth.reshape(-1).long() * num_labels + predicted.reshape(-1).long()
    return torch.bincount(index, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def parsing_scores(confusion: np.ndarray) -> dict[str, float | int]:
    """Pixel accuracy, mIoU over the classes present in the ground truth, and how many classes the ground truth
    shows and the prediction uses."""
    c = confusion.astype(np.float64)
    true_pixels, predicted_pixels, hits = c.sum(1), c.sum(0), np.diag(c)
    present = true_pixels > 0
    iou = hits[present] / (true_pixels + predicted_pixels - hits)[present]
    return {"pixel_accuracy": float(hits.sum() / c.sum()), "miou": float(iou.mean()),
            "classes_in_truth": int(present.sum()), "classes_predicted": int((predicted_pixels > 0).sum())}

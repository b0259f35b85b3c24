"""Validation: top-1 and top-5 error on centre crops, or on 10 crops (§4.1): the softmax
averaged over the 4 corner patches, the centre patch and their horizontal reflections."""
from __future__ import annotations

import numpy as np

from .metrics import accuracy


def evaluate(net, dataset, *, crop: int, batch_size: int, ten_crop: bool = False,
             split: str = "val", workers: int = 0, limit: int | None = None,
             progress=None, shard: tuple[int, int] | None = None) -> dict[str, float]:
    """Top-1/top-5 error (fractions) and mean loss over `split` (with shard (r, K): over
    replica r's piece of every batch; the caller adds the replicas' counts up)."""
    n = 0
    top1 = top5 = loss = 0.0
    if ten_crop and shard is not None:
        raise ValueError("10-crop evaluation is not sharded; score it in one process")
    classes = len(getattr(dataset, "classes", ())) or 1
    seen = np.zeros(classes, np.int64)     # images per true class
    right = np.zeros(classes, np.int64)    # top-1 hits per true class
    if ten_crop:
        batches = dataset.ten_crop_batches(split, batch_size=max(1, batch_size // 10) or 1,
                                           crop=crop, workers=workers)
    else:
        batches = dataset.loader(split, batch_size=batch_size, crop=crop, train=False,
                                 workers=workers, shard=shard)
    with batches:
        for x, y in batches:
            if len(y) == 0:             # a replica's empty piece of a short last batch
                continue
            x = x.astype(getattr(net, "dtype", x.dtype), copy=False)
            if ten_crop:
                b, v = x.shape[:2]
                p = net.predict_proba(np.ascontiguousarray(
                    x.reshape(b * v, *x.shape[2:]))).reshape(b, v, -1)
                probs = p.mean(axis=1)
            else:
                probs = net.predict_proba(x)
            a1, a5 = accuracy(probs, y, (1, 5))
            yy = np.minimum(np.asarray(y, np.int64), classes - 1)
            np.add.at(seen, yy, 1)
            np.add.at(right, yy, (np.argmax(probs, axis=1) == y).astype(np.int64))
            k = len(y)
            top1 += a1 * k
            top5 += a5 * k
            loss += float(-np.log(np.maximum(probs[np.arange(k), y], 1e-30)).sum())
            n += k
            if progress is not None:
                progress(k)
            if limit is not None and n >= limit:
                break
    if n == 0:
        return {"top1_error": float("nan"), "top5_error": float("nan"), "loss": float("nan"),
                "images": 0}
    return {"top1_error": 1.0 - top1 / n, "top5_error": 1.0 - top5 / n, "loss": loss / n,
            "images": n, "class_images": seen.tolist(),
            "class_top1_error": [1.0 - r / c if c else None for r, c in zip(right, seen)]}

"""Short fingerprints of training data, the identity checks of stores and runs.

`labels_fingerprint` is recorded by the expert store (experts.py, DATM) and in a run's record (methods.base);
`images_fingerprint` in the run record. Both are the first 16 hex digits of a SHA-1 of the array's bytes in
one fixed dtype, so equal data gives equal fingerprints whatever the caller's dtype or layout.
"""
from __future__ import annotations

import hashlib

import numpy as np


def labels_fingerprint(y) -> str:
    """Short SHA-1 of an integer label array (as int64): changes whenever the (noisy) labels change."""
    y = np.ascontiguousarray(np.asarray(y).astype(np.int64))
    return hashlib.sha1(y.tobytes()).hexdigest()[:16]


def images_fingerprint(x) -> str:
    """Short SHA-1 of an image array (as float32): changes whenever any pixel changes."""
    x = np.ascontiguousarray(np.asarray(x, np.float32))
    return hashlib.sha1(x.tobytes()).hexdigest()[:16]

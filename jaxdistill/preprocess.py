"""Image preprocessing fitted on the training split: none, per-channel mean/std, and two ZCA variants.

- `meanstd`: per-channel (x - mean) / std.
- `zca_datm` (MTT/DATM, kornia ZCAWhitening(eps=0.1)): on [0,1] pixels, mu = mean(X),
  C = (X-mu)^T (X-mu) / (N-1), C = U diag(S) U^T, x -> (x - mu) U diag((S+eps)^-1/2) U^T.  eps is absolute.
- `zca_rcig` (RCIG/FRePo): per-channel meanstd first, then zca_mean = mean of that, C = Xc^T Xc / N,
  reg = 0.1 * trace(C) / D, x -> (x - zca_mean) U diag((s+reg)^-1/2) U^T.

The fit runs in float64 (covariance accumulated over row chunks, so 100k x 12288 never sits in memory
as float64); the stored parameters are float32 `U` (D,D) and the diagonal `w` (D,), which serve both
`apply` and `invert` (the inverse is U diag(1/w) U^T). `apply`/`invert` take numpy or jax arrays of
shape (..., H, W, C) and return the same kind (jax arrays also inside jit).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxdistill.errors import ConfigError, DataError

KINDS = ("none", "meanstd", "zca_datm", "zca_rcig")
_CHUNK = 4096  # rows per covariance chunk


def _xp(x):
    """numpy for numpy input, jax.numpy for jax arrays (and tracers)."""
    try:
        import jax
        if isinstance(x, jax.Array):
            import jax.numpy as jnp
            return jnp
    except ImportError:  # pragma: no cover
        pass
    return np


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessor:
    """A fitted preprocessing transform. Arrays are float32; unused ones are None.

    shape: (H, W, C) it was fitted on; mean/std: (C,); zca_mean: (D,); zca_u: (D, D) eigenvectors;
    zca_w: (D,) = (eigenvalue + eps)^-1/2; eps: the absolute regulariser actually used.
    """

    kind: str
    shape: tuple[int, int, int] | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    zca_mean: np.ndarray | None = None
    zca_u: np.ndarray | None = None
    zca_w: np.ndarray | None = None
    eps: float | None = None

    # ---- transforms -------------------------------------------------------------------------
    def _param(self, name: str, xp, dt):
        """Stored array `name` as `xp` array of dtype dt; jax copies are cached so a (D, D) ZCA matrix
        goes to the device once, not on every call."""
        v = getattr(self, name)
        if xp is np:
            return v.astype(dt, copy=False)
        cache = self.__dict__.setdefault("_jax_cache", {})
        key = (name, np.dtype(dt).name)
        if key not in cache:
            import jax
            with jax.ensure_compile_time_eval():  # concrete even when first called under jit
                cache[key] = xp.asarray(v, dtype=dt)
        return cache[key]

    def _check(self, x):
        if self.shape is not None and tuple(x.shape[-3:]) != tuple(self.shape):
            raise DataError(f"preprocessor {self.kind!r} was fitted on images {tuple(self.shape)}, got "
                            f"array of shape {tuple(x.shape)}; allowed (..., {', '.join(map(str, self.shape))})")

    def _zca(self, x, forward: bool):
        xp = _xp(x)
        lead = x.shape[:-3]
        flat = x.reshape((-1, int(np.prod(self.shape))))
        dt = flat.dtype if flat.dtype in (np.float32, np.float64) else np.float32
        u, w, m = (self._param(k, xp, dt) for k in ("zca_u", "zca_w", "zca_mean"))
        flat = flat.astype(dt)
        if forward:
            out = ((flat - m) @ u * w) @ u.T
        else:
            out = ((flat @ u) / w) @ u.T + m
        return out.reshape(lead + tuple(self.shape))

    def apply(self, x):
        """(..., H, W, C) images in [0,1] -> the working space of this preprocessor."""
        if self.kind == "none":
            return x
        self._check(x)
        xp = _xp(x)
        if self.mean is not None:
            dt = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
            x = (x.astype(dt) - self._param("mean", xp, dt)) / self._param("std", xp, dt)
        if self.zca_u is not None:
            x = self._zca(x, forward=True)
        return x

    def invert(self, x):
        """Inverse of `apply`: working space -> [0,1] pixel space (e.g. to show distilled images)."""
        if self.kind == "none":
            return x
        self._check(x)
        xp = _xp(x)
        if self.zca_u is not None:
            x = self._zca(x, forward=False)
        if self.mean is not None:
            dt = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
            x = x.astype(dt) * self._param("std", xp, dt) + self._param("mean", xp, dt)
        return x

    __call__ = apply

    # ---- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (np.savez-able without pickle); absent fields are left out."""
        d = {"kind": np.asarray(self.kind)}
        if self.shape is not None:
            d["shape"] = np.asarray(self.shape, np.int64)
        for k in ("mean", "std", "zca_mean", "zca_u", "zca_w"):
            v = getattr(self, k)
            if v is not None:
                d[k] = np.asarray(v)
        if self.eps is not None:
            d["eps"] = np.asarray(self.eps, np.float64)
        return d

    @classmethod
    def from_dict(cls, d) -> "Preprocessor":
        """Rebuild from `to_dict()` output (or an NpzFile / dict holding those keys)."""
        if "kind" not in d:
            raise DataError(f"preprocessor dict has no 'kind'; found keys {sorted(d)}")
        kind = str(np.asarray(d["kind"]))
        if kind not in KINDS:
            raise ConfigError(f"unknown preprocessor kind {kind!r}; allowed: {', '.join(KINDS)}")
        need = {"none": (), "meanstd": ("shape", "mean", "std"), "zca_datm": ("shape", "zca_mean", "zca_u", "zca_w"),
                "zca_rcig": ("shape", "mean", "std", "zca_mean", "zca_u", "zca_w")}[kind]
        missing = [k for k in need if k not in d]
        if missing:
            raise DataError(f"preprocessor dict of kind {kind!r} lacks {missing}; found {sorted(d)}")
        get = lambda k: np.asarray(d[k], np.float32) if k in d else None  # noqa: E731
        return cls(kind=kind, shape=tuple(int(s) for s in np.asarray(d["shape"])) if "shape" in d else None,
                   mean=get("mean"), std=get("std"), zca_mean=get("zca_mean"), zca_u=get("zca_u"),
                   zca_w=get("zca_w"), eps=float(np.asarray(d["eps"])) if "eps" in d else None)


# ---- fitting ----------------------------------------------------------------------------------
def _moments(flat_chunks, d: int):
    """float64 sum and X^T X over row chunks of (N, D)."""
    n, s, xtx = 0, np.zeros(d), np.zeros((d, d))
    for c in flat_chunks:
        c = c.astype(np.float64)
        n += c.shape[0]
        s += c.sum(0)
        xtx += c.T @ c
    return n, s, xtx


def _chunks(x: np.ndarray, transform=None):
    n = x.shape[0]
    for i in range(0, n, _CHUNK):
        c = x[i:i + _CHUNK].reshape(min(_CHUNK, n - i), -1)
        yield c if transform is None else transform(c)


def _eig_whiten(cov: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    s, u = np.linalg.eigh(cov)
    s = np.clip(s, 0.0, None)  # tiny negative eigenvalues are round-off of a PSD matrix
    return u, 1.0 / np.sqrt(s + eps)


def fit_preprocessor(kind: str, x_train, *, mean=None, std=None, zca_eps: float = 0.1,
                     zca_reg: float = 0.1) -> Preprocessor:
    """Fit preprocessing `kind` on training images `x_train` (N, H, W, C) in [0, 1].

    mean/std: per-channel constants to use instead of the training statistics (meanstd, zca_rcig).
    zca_eps: zca_datm's absolute eigenvalue regulariser (kornia eps, 0.1).
    zca_reg: zca_rcig's relative regulariser: reg = zca_reg * trace(C) / D.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown preprocessor kind {kind!r}; allowed: {', '.join(KINDS)}")
    if kind == "none":
        return Preprocessor("none")
    x = np.asarray(x_train)
    if x.ndim != 4 or x.shape[0] < 2:
        raise DataError(f"fit_preprocessor needs images (N>=2, H, W, C), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"fit_preprocessor needs float images in [0,1], got dtype {x.dtype}")
    shape = tuple(int(s) for s in x.shape[1:])
    c = shape[-1]
    d = int(np.prod(shape))

    if kind in ("meanstd", "zca_rcig"):
        if mean is None or std is None:
            # Per-channel statistics over all pixels, float64 accumulation.
            n_px, s1, s2 = 0, np.zeros(c), np.zeros(c)
            for ch in _chunks(x):
                ch = ch.reshape(-1, c).astype(np.float64)
                n_px += ch.shape[0]
                s1 += ch.sum(0)
                s2 += (ch * ch).sum(0)
            m_fit = s1 / n_px
            sd_fit = np.sqrt(np.maximum(s2 / n_px - m_fit ** 2, 0.0))
            mean = m_fit if mean is None else mean
            std = sd_fit if std is None else std
        mean = np.broadcast_to(np.asarray(mean, np.float64), (c,)).copy()
        std = np.broadcast_to(np.asarray(std, np.float64), (c,)).copy()
        if np.any(~np.isfinite(std)) or np.any(std <= 0):
            raise DataError(f"per-channel std {std.tolist()} has a zero/non-finite channel (constant images?); "
                            f"allowed std > 0")
        if kind == "meanstd":
            return Preprocessor("meanstd", shape, mean=mean.astype(np.float32), std=std.astype(np.float32))
        norm = lambda ch: ((ch.reshape(ch.shape[0], -1, c) - mean) / std).reshape(ch.shape[0], d)  # noqa: E731
        n, s, xtx = _moments(_chunks(x, lambda ch: norm(ch.astype(np.float64))), d)
        zmean = s / n
        cov = xtx / n - np.outer(zmean, zmean)            # biased: Xc^T Xc / N
        eps = float(zca_reg) * float(np.trace(cov)) / d   # FRePo: 0.1 * trace / D
        u, w = _eig_whiten(cov, eps)
        return Preprocessor("zca_rcig", shape, mean=mean.astype(np.float32), std=std.astype(np.float32),
                            zca_mean=zmean.astype(np.float32), zca_u=u.astype(np.float32),
                            zca_w=w.astype(np.float32), eps=eps)

    # zca_datm
    n, s, xtx = _moments(_chunks(x), d)
    mu = s / n
    cov = (xtx - n * np.outer(mu, mu)) / (n - 1)          # unbiased, as kornia
    u, w = _eig_whiten(cov, float(zca_eps))
    return Preprocessor("zca_datm", shape, zca_mean=mu.astype(np.float32), zca_u=u.astype(np.float32),
                        zca_w=w.astype(np.float32), eps=float(zca_eps))

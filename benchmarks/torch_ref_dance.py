"""PyTorch-eager reference of one DANCE iteration, written the way the original computes it.

Structure of the original (`DANCE.py` on IDC's code): interpolate the state dicts of a pool model
(init, trained) into the middle encoder; clamp the synthetic data; a Python loop over classes, each
sampling a real batch, decoding the multi-formation images, applying ONE batch-shared DiffAug draw
(normalize, color, crop, cutout) to cat([real, syn]), matching mean features (real under no_grad) and
stepping an SGD(momentum 0.5) optimiser over the whole synthetic tensor; then the calibration loop
(cross-entropy of the trained model per class). Used only by benchmarks/bench_dance.py for timing; it is
not a port of the original's code. torch is optional (`pip install torch`).
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvNet(nn.Module):
    """ConvNet-D with instance norm (GroupNorm(width, width)), ReLU, avg-pool; NCHW."""

    def __init__(self, channels: int, num_classes: int, width: int = 128, depth: int = 3, size: int = 32):
        super().__init__()
        layers, c = [], channels
        for d in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=3 if (c == 1 and d == 0) else 1),
                       nn.GroupNorm(width, width, affine=True), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2)]
            c = width
            size = (size + (4 if (d == 0 and channels == 1) else 0)) // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * size * size, num_classes)

    def embed(self, x):
        return self.features(x).flatten(1)

    def forward(self, x):
        return self.classifier(self.embed(x))


def diffaug_batch(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalize, then batch-shared color (brightness, saturation, contrast), crop (translate), cutout."""
    x = (x - mean) / std
    n, c, h, w = x.shape
    dev = x.device
    x = x + (torch.rand(1, device=dev) - 0.5)
    m = x.mean(1, keepdim=True)
    x = (x - m) * (torch.rand(1, device=dev) * 2.0) + m
    m = x.mean([1, 2, 3], keepdim=True)
    x = (x - m) * (torch.rand(1, device=dev) + 0.5) + m
    s = int(h * 0.125 + 0.5)
    tr, tc = [int(torch.randint(-s, s + 1, (1,))) for _ in range(2)]
    xp = F.pad(x, (1, 1, 1, 1))
    ri = (torch.arange(h, device=dev) + tr + 1).clamp(0, h + 1)
    ci = (torch.arange(w, device=dev) + tc + 1).clamp(0, w + 1)
    x = xp[:, :, ri][:, :, :, ci]
    cs = int(h * 0.5 + 0.5)
    cr, cc = [int(torch.randint(0, h + (1 - cs % 2), (1,))) for _ in range(2)]
    mask = torch.ones(h, w, device=dev)
    mask[max(cr - cs // 2, 0):min(cr - cs // 2 + cs, h), max(cc - cs // 2, 0):min(cc - cs // 2 + cs, w)] = 0
    return x * mask


def decode_zoom(x: torch.Tensor, factor: int) -> torch.Tensor:
    if factor == 1:
        return x
    h = x.shape[-1]
    s = math.ceil(h / factor)
    rem = h % factor
    if rem:
        x = F.pad(x, (0, factor - rem, 0, factor - rem), value=0.5)
    crops = [x[:, :, i * s:(i + 1) * s, j * s:(j + 1) * s] for i in range(factor) for j in range(factor)]
    return F.interpolate(torch.cat(crops), size=(h, h), mode="bilinear", align_corners=False)


def make_state(num_classes=10, ipc=10, factor=2, size=32, channels=3, width=128, depth=3, pool=5,
               n_real_per_class=500, device="cuda", seed=0):
    g = torch.Generator().manual_seed(seed)
    syn = torch.rand(num_classes * ipc, channels, size, size, generator=g).to(device).requires_grad_(True)
    real = [torch.rand(n_real_per_class, channels, size, size, generator=g).to(device) for _ in range(num_classes)]
    nets = [(ConvNet(channels, num_classes, width, depth, size).state_dict(),
             ConvNet(channels, num_classes, width, depth, size).state_dict()) for _ in range(pool)]
    model = ConvNet(channels, num_classes, width, depth, size).to(device)
    model_t = ConvNet(channels, num_classes, width, depth, size).to(device)
    opt = torch.optim.SGD([syn], lr=0.01 * ipc, momentum=0.5)
    return dict(syn=syn, real=real, nets=nets, model=model, model_t=model_t, opt=opt, ipc=ipc, factor=factor,
                num_classes=num_classes, mean=torch.full((1, channels, 1, 1), 0.45, device=device),
                std=torch.full((1, channels, 1, 1), 0.25, device=device))


def iteration(S: dict, batch_real=128, batch_syn_max=200) -> float:
    syn, opt, ipc, f = S["syn"], S["opt"], S["ipc"], S["factor"]
    k = int(torch.randint(0, len(S["nets"]), (1,)))
    lam = float(torch.rand(1))
    init, trained = S["nets"][k]
    # the original torch.load()s two checkpoints per iteration; here they sit in host memory
    S["model"].load_state_dict({n: lam * init[n] + (1 - lam) * trained[n] for n in init})
    S["model_t"].load_state_dict(trained)
    with torch.no_grad():
        syn.data.clamp_(0, 1)
    total = 0.0
    for c in range(S["num_classes"]):
        r = S["real"][c][torch.randperm(S["real"][c].shape[0], device=syn.device)[:batch_real]]
        s = decode_zoom(syn[c * ipc:(c + 1) * ipc], f)
        if s.shape[0] > batch_syn_max:
            s = s[torch.randperm(s.shape[0], device=syn.device)[:batch_syn_max]]
        both = diffaug_batch(torch.cat([r, s]), S["mean"], S["std"])
        with torch.no_grad():
            fr = S["model"].embed(both[: r.shape[0]]).mean(0)
        fs = S["model"].embed(both[r.shape[0]:]).mean(0)
        loss = ((fr - fs) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()
    for c in range(S["num_classes"]):
        s = decode_zoom(syn[c * ipc:(c + 1) * ipc], f)
        if s.shape[0] > batch_syn_max:
            s = s[torch.randperm(s.shape[0], device=syn.device)[:batch_syn_max]]
        out = S["model_t"](diffaug_batch(s, S["mean"], S["std"]))
        loss = F.cross_entropy(out, torch.full((s.shape[0],), c, device=syn.device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return total


def bench(ipc=10, factor=2, size=32, channels=3, width=128, depth=3, batch_real=128, iters=5, device=None):
    """Median seconds per iteration (after 2 warm-up iterations) and peak memory (bytes, CUDA only)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    S = make_state(ipc=ipc, factor=factor, size=size, channels=channels, width=width, depth=depth,
                   device=device, n_real_per_class=max(batch_real, 200))
    for _ in range(2):
        iteration(S, batch_real)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        iteration(S, batch_real)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    times.sort()
    return times[len(times) // 2], peak


if __name__ == "__main__":
    print(bench())

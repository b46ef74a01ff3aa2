"""PyTorch-eager reference of one DATM iteration, written the way the original (MTT/DATM) code does it.

Flat parameter vector, functional ConvNet forward (conv -> instance norm (GroupNorm C groups) -> ReLU ->
avg-pool, x depth, linear), `torch.autograd.grad(create_graph=True)` per unrolled step, the list of all
student parameter vectors kept alive, then `loss.backward()` into images, label logits and lr and three
SGD-momentum optimisers. Augmentation is omitted (compare with the JAX bench's `--no-dsa` figure).

torch is optional: `python benchmarks/torch_ref_datm.py [--small]` needs `pip install torch`.
"""
from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import time


def _shapes(width: int, depth: int, channels: int, size: int, num_classes: int):
    """(name, shape) in the order DATM's ReparamModule flattens them: conv.w, conv.b, gn.w, gn.b, ..., fc."""
    out, cin, s = [], channels, size
    for d in range(depth):
        out += [(f"conv{d}.w", (width, cin, 3, 3)), (f"conv{d}.b", (width,)),
                (f"norm{d}.w", (width,)), (f"norm{d}.b", (width,))]
        cin = width
        s //= 2
    out += [("fc.w", (num_classes, width * s * s)), ("fc.b", (num_classes,))]
    return out


def make_forward(torch, shapes, width: int):
    F = torch.nn.functional
    sizes = [math.prod(s) for _, s in shapes]

    def forward(x, flat):
        parts = list(torch.split(flat, sizes))
        views = [p.view(s) for p, (_, s) in zip(parts, shapes)]
        h = x
        n_conv = (len(shapes) - 2) // 4
        for d in range(n_conv):
            w, b, gw, gb = views[4 * d:4 * d + 4]
            h = F.conv2d(h, w, b, padding=1)
            h = F.group_norm(h, width, gw, gb, eps=1e-5)
            h = F.relu(h)
            h = F.avg_pool2d(h, 2, 2)
        h = h.reshape(h.shape[0], -1)
        return F.linear(h, views[-2], views[-1])

    return forward


def run(small: bool = False, iters: int = 5, device: str | None = None, ipc: int = 10, syn_steps: int = 80,
        batch_syn: int = 100, width: int = 128, size: int = 32, verbose: bool = True) -> dict:
    import torch

    if small:
        ipc, syn_steps, batch_syn, width, size = 2, 10, 20, 16, 16
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    c, ch, depth = 10, 3, 3
    n = c * ipc
    shapes = _shapes(width, depth, ch, size, c)
    p = sum(math.prod(s) for _, s in shapes)
    forward = make_forward(torch, shapes, width)

    image_syn = torch.randn(n, ch, size, size, device=dev, requires_grad=True)
    label_syn = torch.randn(n, c, device=dev, requires_grad=True)
    syn_lr = torch.tensor(0.01, device=dev, requires_grad=True)
    opt_img = torch.optim.SGD([image_syn], lr=100.0, momentum=0.5)
    opt_y = torch.optim.SGD([label_syn], lr=2.0, momentum=0.9)
    opt_lr = torch.optim.SGD([syn_lr], lr=1e-5, momentum=0.5)
    start = torch.randn(p, device=dev) * 0.05
    target = start + torch.randn(p, device=dev) * 0.01

    def iteration():
        student_params = [start.clone().requires_grad_(True)]
        indices_chunks = []
        for _ in range(syn_steps):
            if not indices_chunks:
                indices_chunks = list(torch.split(torch.randperm(n, device=dev), batch_syn))
            these = indices_chunks.pop()
            x = image_syn[these]
            y = label_syn[these]
            out = forward(x, student_params[-1])
            ce = torch.sum(-torch.softmax(y, 1) * torch.log_softmax(out, 1), 1).mean()
            grad = torch.autograd.grad(ce, student_params[-1], create_graph=True)[0]
            student_params.append(student_params[-1] - syn_lr * grad)
        loss = torch.sum((student_params[-1] - target) ** 2) / torch.sum((start - target) ** 2)
        opt_img.zero_grad(); opt_y.zero_grad(); opt_lr.zero_grad()
        loss.backward()
        opt_img.step(); opt_y.step(); opt_lr.step()
        return float(loss.detach())

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    iteration(); sync()  # warm-up (cuDNN autotune, allocator)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        iteration(); sync()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    res = {"impl": "torch-eager", "device": str(dev), "median_s": statistics.median(times), "times_s": times,
           "peak_bytes": int(peak), "peak_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "max RSS",
           "shapes": dict(ipc=ipc, syn_steps=syn_steps, batch_syn=batch_syn, width=width, size=size, params=p)}
    if verbose:
        print(f"torch  {res['device']:>6}  median {res['median_s'] * 1e3:9.1f} ms/iter  peak "
              f"{res['peak_bytes'] / 2**30:6.2f} GiB ({res['peak_kind']})  {res['shapes']}")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="CPU-sized shapes")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed (pip install torch); nothing to compare", file=sys.stderr)
        return 1
    run(args.small, args.iters, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What one DANCE iteration needs in memory, from XLA's own accounting of the compiled program.

  python benchmarks/dance_memory.py             # the study's CIFAR-10 IPC 10: ConvNet-3 width 128, factor 2,
                                                # 128 real images per class, 5 pool models
  python benchmarks/dance_memory.py --small     # bench_dance.py --small: width 32, 16 real images per class

For the exact per-class scan and the batched variant it lowers and compiles the jitted iteration
(`make_iteration(...).lower(...).compile()`, nothing is run) and prints `memory_analysis()`: arguments
(the synthetic set, the pool, the real images on the device), outputs, temp (the program's own working set:
activations, residuals, gradients) and generated code. It also prints an estimate of the activations a
PyTorch-eager per-class loop holds at once (one class: its real batch forward under no_grad plus the
synthetic batch forward with the residuals its backward keeps), for comparison with temp.

Separating the working set from the allocator: a GPU process's `peak_bytes_in_use` also counts what is not
the step's (compile-time autotuning workspaces, the inputs' copies, other programs' buffers), and
XLA_PYTHON_CLIENT_PREALLOCATE (default true: 75% of the GPU reserved at start, not "in use") changes what
nvidia-smi shows, not the peak in use. Run on the GPU with XLA_PYTHON_CLIENT_ALLOCATOR=platform to see the
allocations as made (slow), or compare temp here with the allocator's peak.

--conv-impl lax (default) is the convolution a GPU runs; auto on a CPU would be the patches path, whose
im2col buffers are 9x the layer inputs and not what an accelerator holds.
"""
from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdistill.methods import dance as D
from jaxdistill.nn import NetConfig, make_net

MB = 1 << 20


def build(ipc: int, factor: int, width: int, batch_real: int, batched: bool, *, size: int = 32, channels: int = 3,
          num_classes: int = 10, pool: int = 5, n_real_per_class: int = 500, conv_impl: str = "lax",
          class_chunk: int = 0):
    """(jitted iteration, its arguments) at the given shapes (random data; memory does not depend on values)."""
    ncfg = NetConfig(num_classes, width=width, depth=3, conv_impl=conv_impl)
    net = make_net(ncfg)
    n = num_classes * n_real_per_class
    x = jax.ShapeDtypeStruct((n, size, size, channels), jnp.float32)
    y = np.repeat(np.arange(num_classes), n_real_per_class)
    table, counts = D.class_buckets_table(y, num_classes)
    params = jax.eval_shape(lambda k: jax.vmap(lambda kk: net.init(kk, (size, size, channels)))(
        jax.random.split(k, pool)), jax.random.PRNGKey(0))
    st = D.Statics(num_classes=num_classes, ipc=ipc, factor=factor, n_real=batch_real,
                   n_syn=min(200, ipc * factor * factor), num_premodel=pool, iter_calib=1, batched=batched,
                   class_chunk=class_chunk)
    tx = optax.sgd(0.01 * ipc, momentum=0.5)
    step = D.make_iteration(net, st, tx)
    syn = jax.ShapeDtypeStruct((num_classes * ipc, size, size, channels), jnp.float32)
    opt = jax.eval_shape(tx.init, syn)
    vec = jax.ShapeDtypeStruct((channels,), jnp.float32)
    args = (syn, opt, jax.random.PRNGKey(0), params, params, x, jnp.asarray(table), jnp.asarray(counts), vec, vec)
    return step, args


def torch_activation_estimate(ipc: int, factor: int, width: int, batch_real: int, size: int = 32,
                              channels: int = 3, num_classes: int = 10) -> dict:
    """Float32 bytes of ConvNet-3 activations a per-class PyTorch loop holds at once (rough, from shapes):
    the real forward under no_grad keeps about two layer outputs alive; the synthetic forward keeps, per
    block, the conv output, the norm output and the pooled output for its backward (ReLU in place)."""
    per_block, s = [], size
    for _ in range(3):
        per_block.append(s * s * width)          # conv / norm / relu outputs at this resolution
        s //= 2
    n_syn = min(200, ipc * factor * factor)
    real = batch_real * 2 * max(per_block) * 4
    syn_saved = n_syn * sum(2 * a + a // 4 for a in per_block) * 4
    syn_input = num_classes * ipc * size * size * channels * 4 * 3   # images, their gradient, the momentum
    return {"real_forward_bytes": real, "syn_residual_bytes": syn_saved, "syn_state_bytes": syn_input,
            "total_bytes": real + syn_saved + syn_input}


def device_memory() -> dict:
    """The allocator's figures (GPU/TPU; empty on CPU): bytes in use now and the process's peak so far."""
    stats = jax.devices()[0].memory_stats() or {}
    return {k.replace("_bytes", "_MB"): round(stats[k] / MB, 1) for k in ("bytes_in_use", "peak_bytes_in_use",
                                                                          "bytes_reserved", "bytes_limit")
            if k in stats}


def materialise(args):
    """Random device arrays for the abstract arguments (for --run)."""
    rng = np.random.default_rng(0)

    def one(a):
        if isinstance(a, jax.ShapeDtypeStruct):
            return jnp.asarray(rng.uniform(size=a.shape).astype(a.dtype) if a.shape else np.zeros((), a.dtype))
        return a

    return jax.tree_util.tree_map(one, args)


def analyse(label: str, step, args, run: bool = False) -> dict:
    row = {"variant": label}
    if run:
        row["allocator_before_compile"] = device_memory()
    compiled = step.lower(*args).compile()
    ma = compiled.memory_analysis()
    for f in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
              "generated_code_size_in_bytes"):
        v = getattr(ma, f, None)
        row[f.replace("_size_in_bytes", "_MB")] = None if v is None else round(v / MB, 1)
    if run:  # the allocator's view: compile-time autotuning shows in the peak before the first run
        row["allocator_after_compile"] = device_memory()
        out = compiled(*materialise(args))
        jax.block_until_ready(out)
        row["allocator_after_run"] = device_memory()
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--conv-impl", default="lax", choices=("lax", "patches", "auto"))
    p.add_argument("--n-real-per-class", type=int, default=None,
                   help="real images per class held on the device (default 500, --small 32; CIFAR-10 has 5000)")
    p.add_argument("--variants", default="scan,batched")
    p.add_argument("--run", action="store_true",
                   help="also run the compiled step once on random data and print the allocator's figures before "
                        "compile, after compile and after the run (GPU: peak_bytes_in_use is process-wide, so run "
                        "one variant per process to attribute it)")
    p.add_argument("--class-chunks", type=int, nargs="+", default=[0, 1],
                   help="Statics.class_chunk values to compare (0: all classes at once, the default; 1: one class "
                        "at a time, as the PyTorch loop)")
    a = p.parse_args(argv)
    width, batch_real, nreal = (32, 16, 32) if a.small else (128, 128, 500)
    nreal = a.n_real_per_class or nreal
    factor = 2
    print(f"# device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}; "
          f"ipc {a.ipc}, width {width}, batch_real {batch_real}, factor {factor}, real images on device "
          f"{10 * nreal}, conv {a.conv_impl}")
    est = torch_activation_estimate(a.ipc, factor, width, batch_real)
    print(json.dumps({"torch_per_class_estimate_MB": {k: round(v / MB, 1) for k, v in est.items()}}))
    for variant in a.variants.split(","):
        for cc in a.class_chunks:
            step, args = build(a.ipc, factor, width, batch_real, variant == "batched", n_real_per_class=nreal,
                               conv_impl=a.conv_impl, class_chunk=cc)
            label = f"{variant} class_chunk={cc}"
            print(json.dumps(analyse(label, step, args, a.run)), flush=True)


if __name__ == "__main__":
    main()

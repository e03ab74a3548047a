"""Time initlab.init against torch.nn.init, and lsuv_ on a 30-layer, 512-wide MLP.

Usage: ``python benchmarks/bench_init.py [--threads N] [--budget SECONDS] [--clock wall|cpu]``

Each torch-named function fills a 4096x4096 weight and a 512x256x3x3 conv weight, torch and
initlab alternating on the same buffer in one process; the table gives the median of the
repeats (at least one, at most seven, about ``--budget`` seconds per row and library).
Targets (issue 3): ratio <= 1.1, trunc_normal_ <= 2, lsuv_ <= 0.5 s on 2 cores.

On a machine that other jobs share, wall-clock times swing several-fold (OpenMP threads
spin while they wait for a core); ``--threads 1 --clock cpu`` times the process's own CPU
seconds instead, which is what the ratio is about.
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.init as T
from torch import nn

import initlab.init as I
from initlab.lsuv import lsuv_

SHAPES = [(4096, 4096), (512, 256, 3, 3)]
CASES: list[tuple[str, Callable[[object], Callable], tuple[int, ...]]] = [
    ("uniform_", lambda m: m.uniform_, (2, 4)),
    ("normal_", lambda m: m.normal_, (2, 4)),
    ("trunc_normal_", lambda m: m.trunc_normal_, (2, 4)),
    ("constant_", lambda m: lambda t: m.constant_(t, 0.5), (2, 4)),
    ("ones_", lambda m: m.ones_, (2, 4)),
    ("zeros_", lambda m: m.zeros_, (2, 4)),
    ("eye_", lambda m: m.eye_, (2,)),
    ("dirac_", lambda m: m.dirac_, (4,)),
    ("xavier_uniform_", lambda m: m.xavier_uniform_, (2, 4)),
    ("xavier_normal_", lambda m: m.xavier_normal_, (2, 4)),
    ("kaiming_uniform_", lambda m: m.kaiming_uniform_, (2, 4)),
    ("kaiming_normal_", lambda m: m.kaiming_normal_, (2, 4)),
    ("orthogonal_", lambda m: m.orthogonal_, (2, 4)),
    ("sparse_", lambda m: lambda t: m.sparse_(t, 0.1), (2,)),
]


CLOCK = time.perf_counter


def _once(fn: Callable, t: torch.Tensor) -> float:
    start = CLOCK()
    fn(t)
    return CLOCK() - start


def compare(
    theirs: Callable, ours: Callable, t: torch.Tensor, budget: float
) -> tuple[float, float]:
    """Median seconds of torch's and initlab's function, alternating, within ``budget``."""
    a, b = [_once(theirs, t)], [_once(ours, t)]  # the first call of each also warms up
    while len(a) < 7 and sum(a) + sum(b) < budget:
        a.append(_once(theirs, t))
        b.append(_once(ours, t))
    if len(a) > 2:  # drop the warm-up call when there are others
        a, b = a[1:], b[1:]
    return statistics.median(a), statistics.median(b)


def bench_lsuv(repeats: int = 3) -> float:
    times = []
    for seed in range(repeats):
        torch.manual_seed(seed)
        model = nn.Sequential(*[m for _ in range(30) for m in (nn.Linear(512, 512), nn.ReLU())])
        x = torch.randn(256, 512)
        start = CLOCK()
        lsuv_(model, x, generator=torch.Generator().manual_seed(seed))
        times.append(CLOCK() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--budget", type=float, default=1.2, help="seconds per row and library")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, "
        f"load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'function':<18} {'shape':<18} {'torch ms':>10} {'initlab ms':>11} {'ratio':>7}")
    print("-" * 68)
    for name, pick, dims in CASES:
        for shape in SHAPES:
            if len(shape) not in dims:
                continue
            t = torch.empty(shape)
            theirs, ours = compare(pick(T), pick(I), t, args.budget)
            print(
                f"{name:<18} {'x'.join(map(str, shape)):<18} {theirs * 1e3:>10.2f} "
                f"{ours * 1e3:>11.2f} {ours / theirs:>7.2f}"
            )
    print(
        f"\nlsuv_ on a 30-layer, 512-wide ReLU MLP, batch 256: {bench_lsuv():.3f} s (median of 3, {args.clock} clock)"
    )


if __name__ == "__main__":
    main()

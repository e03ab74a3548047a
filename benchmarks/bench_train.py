"""Time initlab.train.fit on the issue's reference run: a 2-layer MLP on digits().

Usage: ``python benchmarks/bench_train.py [--threads N ...] [--epochs E]``

The run: ``mlp(64, 128, depth=1, out_features=10)`` (linear1 + head), SGD with momentum 0.9,
lr 0.05, batch 64, 20 epochs, seed 0. Each thread count runs in a fresh Python process, so the
first run pays the one-time costs a notebook pays (importing torch, building the first
optimizer); a second, identical run in the same process shows the warm time. Columns:

* ``import``: ``import torch, initlab``; ``data``: ``digits()`` (imports scikit-learn);
* ``fit cold``: wall time of the first ``fit`` call (checks, first optimizer, loop, evaluation);
* ``loop``: ``History.seconds`` of that call (the training loop and per-epoch evaluation);
* ``fit warm``: wall time of the second ``fit`` call;
* ``total``: data + fit cold, the time the issue's target (< 10 s on 2 cores) applies to.
"""

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = "--child"


def child(threads: int, epochs: int) -> None:
    t0 = time.perf_counter()
    import torch

    from initlab.data import digits
    from initlab.models import mlp
    from initlab.train import fit

    t_import = time.perf_counter() - t0
    if threads > 0:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    data = digits()
    t_data = time.perf_counter() - t0
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = mlp(64, 128, depth=1, out_features=10)
        t0 = time.perf_counter()
        hist = fit(net, data, epochs=epochs, lr=0.05, optimizer="momentum", progress=False)
        runs.append((time.perf_counter() - t0, hist.seconds, hist.test_accuracy[-1]))
    print(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "import": t_import,
                "data": t_data,
                "fit_cold": runs[0][0],
                "loop": runs[0][1],
                "fit_warm": runs[1][0],
                "accuracy": runs[0][2],
                "total": t_data + runs[0][0],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(CHILD, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.threads[0], args.epochs)
        return
    env = dict(os.environ, INITLAB_PROGRESS="0")
    print(f"2-layer MLP (64-128-10) on digits, {args.epochs} epochs, momentum SGD, batch 64")
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    header = "threads  import  data  fit cold  loop  fit warm  total  test accuracy"
    print(header)
    print("-" * len(header))
    for threads in args.threads:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                CHILD,
                "--threads",
                str(threads),
                "--epochs",
                str(args.epochs),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{r['threads']:>7}  {r['import']:5.2f}s {r['data']:4.2f}s  {r['fit_cold']:7.2f}s "
            f"{r['loop']:4.2f}s  {r['fit_warm']:7.2f}s {r['total']:5.2f}s  {r['accuracy']:.4f}"
        )
    print("target: total < 10 s on 2 CPU cores, test accuracy >= 0.95")


if __name__ == "__main__":
    main()

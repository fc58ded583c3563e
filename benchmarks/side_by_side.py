"""Is a CPU's second core worth more to a run's second thread or to a second run beside it?

Per method, the images/s of the full training step (as ``benchmarks/throughput.py`` times it) in
three set-ups, each in fresh processes that build and warm up first and start timing together:

1. one run with one torch thread;
2. one run with two torch threads;
3. two one-thread runs side by side (their images/s added).

This is the measurement behind the ``cpu`` profile's ``num_threads: 1`` and ``make reproduce``'s
``JOBS=2`` (mixlab/profiles/common.yaml). Writes ``results/benchmarks/side_by_side_<device>.md``
and ``.json`` with provenance and the load average at start and end. Run it on a quiet machine:

    python benchmarks/side_by_side.py                     # five methods, about 2 minutes on 2 cores
    python benchmarks/side_by_side.py --methods mice --steps 2 --out /tmp/s.md   # seconds
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from throughput import METHODS, run_steps, trainer_for  # noqa: E402

from mixlab.utils import io  # noqa: E402
from mixlab.utils.provenance import provenance  # noqa: E402


def child(method: str, threads: int, steps: int, subset: int, dataset: str | None) -> None:
    """Build and warm up one run, say "ready", wait for "go" on stdin, then print its images/s."""
    import torch

    torch.set_num_threads(threads)
    train = {"subset": subset, "num_threads": threads, **({"dataset": dataset} if dataset else {})}
    trainer = trainer_for(method, "cpu", train)
    run_steps(trainer, 2)
    print("ready", flush=True)
    sys.stdin.readline()
    seconds = run_steps(trainer, steps)
    print(json.dumps({"img_s": steps * trainer.train_cfg.batch_size / seconds}), flush=True)


def together(method: str, threads: list[int], steps: int, subset: int, dataset: str | None) -> list[float]:
    """Images/s of one child per entry of ``threads``, all timed at the same moment."""
    cmd = [sys.executable, __file__, "--child", method, "--steps", str(steps), "--subset", str(subset),
           *(["--dataset", dataset] if dataset else [])]
    procs = [subprocess.Popen([*cmd, "--threads", str(t)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=REPO) for t in threads]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{method}: a benchmark child failed to start (run it alone to see why)")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    rates = [json.loads(p.stdout.readline())["img_s"] for p in procs]
    for p in procs:
        p.wait()
    return rates


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--steps", type=int, default=6, help="timed steps per run")
    p.add_argument("--subset", type=int, default=8192, help="images the runs draw their batches from")
    p.add_argument("--dataset", default=None, help="default: the cpu profile's (Fashion-MNIST)")
    p.add_argument("--out", default=None, help="default: results/benchmarks/side_by_side_cpu.md")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.subset < 1:
        p.error(f"--steps and --subset must be >= 1 (got {args.steps} and {args.subset})")
    if args.child:
        child(args.child, args.threads, args.steps, args.subset, args.dataset)
        return
    load0 = os.getloadavg()[0]
    rows = []
    for method in args.methods:
        one, = together(method, [1], args.steps, args.subset, args.dataset)
        two, = together(method, [2], args.steps, args.subset, args.dataset)
        pair = together(method, [1, 1], args.steps, args.subset, args.dataset)
        rows.append({"method": method, "one_thread": one, "two_threads": two, "two_runs": pair})
        print(f"{method}: 1 thread {one:,.0f}, 2 threads {two:,.0f}, two 1-thread runs "
              f"{pair[0]:,.0f} + {pair[1]:,.0f} img/s", flush=True)
    out = Path(args.out) if args.out else REPO / "results" / "benchmarks" / "side_by_side_cpu.md"
    prov = {**provenance(), "cpus": os.cpu_count(), "load_start": load0, "load_end": os.getloadavg()[0]}
    lines = ["# A second core: a second thread for one run, or a second run beside it (cpu)", "",
             f"Full training step of each method's cpu profile ({args.steps} timed steps after 2 warm-up steps, "
             f"batches drawn from {args.subset:,} images); every set-up in fresh processes that start timing "
             f"together. Commit {prov.get('commit')}, {os.cpu_count()} CPUs, load average {load0:.2f} at start "
             f"and {prov['load_end']:.2f} at the end (`python benchmarks/side_by_side.py`).", "",
             "| method | 1 run, 1 thread | 1 run, 2 threads | 2 threads / 1 | 2 runs of 1 thread (sum) | 2 runs / 1 |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        both = sum(r["two_runs"])
        lines.append(f"| {r['method']} | {r['one_thread']:,.0f} | {r['two_threads']:,.0f} | "
                     f"{r['two_threads'] / r['one_thread']:.2f}x | {both:,.0f} ({r['two_runs'][0]:,.0f} + "
                     f"{r['two_runs'][1]:,.0f}) | {both / r['one_thread']:.2f}x |")
    io.write_text(out, "\n".join(lines) + "\n")
    io.write_json(out.with_suffix(".json"), {"rows": rows, "provenance": prov, "steps": args.steps,
                                             "subset": args.subset})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

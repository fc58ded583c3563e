"""Does the default precision train as well as float32? ACC/NMI over seeds, paired by seed.

For each method (default MiCE and MoCo + spherical k-means) and seed, the `cpu` profile is trained
twice: in float32 (``train.amp=false``) and in the profile's default (``train.amp`` as the `cpu`
profile sets it: bf16 autocast where the CPU has native bf16). The table gives ACC/NMI mean ± std
per path and, paired by seed, the difference (default - float32) with a paired t-test over seeds
and McNemar's test on the per-image right/wrong of the matched clusters pooled over seeds
(``mixlab.workbook.stats``). Runs live in ``--runs`` (finished runs are reused, so a killed sweep resumes);
the table goes to ``results/benchmarks/amp_numerics_cpu.md`` (+ ``.json``) beside the throughput one.

    python benchmarks/amp_numerics.py                           # 2 methods x 2 paths x 3 seeds, cpu profile
    python benchmarks/amp_numerics.py --epochs 4 --subset 3000  # a cheaper budget (said in the table)
    python benchmarks/amp_numerics.py --quick --out /tmp/n.md   # seconds: checks the script
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from mixlab import engine
from mixlab.config import resolve
from mixlab.utils import io
from mixlab.utils.provenance import provenance
from mixlab.workbook.stats import paired_t, paired_test

REPO = Path(__file__).resolve().parent.parent
METRICS = ("acc", "nmi")


def path_overrides(method: str) -> dict[str, dict]:
    """train.* overrides of the two paths: float32, and the `cpu` profile's default precision."""
    return {"fp32": {"amp": False}, "default": {"amp": resolve(method, "cpu").train.amp}}


def train_once(method: str, profile: str, train: dict, out: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics, hard predictions and labels of one run (reused when ``out`` holds a finished run)."""
    if not (out / "metrics.json").exists():
        if out.exists():
            engine.train(resolve(method, profile, {"train": train}), out, resume=True)
        else:
            engine.train(resolve(method, profile, {"train": train}), out)
    metrics = json.loads((out / "metrics.json").read_text())
    pred = np.load(out / "predictions.npz")
    return metrics, pred["posterior"].argmax(1), pred["labels"]


def method_rows(method: str, args) -> dict:
    """Per path: metrics per seed; paired differences and tests over seeds."""
    budget = {k: v for k, v in (("epochs", args.epochs), ("subset", args.subset)) if v}
    runs = {}
    for path, over in path_overrides(method).items():
        runs[path] = [train_once(method, args.profile, {**budget, **over, "seed": seed, "progress": False},
                                 Path(args.runs) / method / path / f"seed{seed}") for seed in args.seeds]
        print(f"{method} {path}: " + "  ".join(f"{m}={np.mean([r[0][m] for r in runs[path]]):.4f}"
                                                for m in METRICS), flush=True)
    scores = {p: {m: [r[0][m] for r in rs] for m in METRICS} for p, rs in runs.items()}
    labels = runs["fp32"][0][2]
    return {"method": method, "seeds": list(args.seeds), "scores": scores,
            "seconds": {p: [r[0]["wall_time_s"] for r in rs] for p, rs in runs.items()},
            "amp_default": path_overrides(method)["default"]["amp"],
            "paired_t": {m: paired_t(scores["default"][m], scores["fp32"][m]) for m in METRICS},
            "mcnemar": paired_test(labels, [r[1] for r in runs["default"]], [r[1] for r in runs["fp32"]])}


def _mean_std(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.4f} ± {v.std(ddof=1) if v.size > 1 else 0.0:.4f}"


def tables(rows: list[dict]) -> list[str]:
    lines = ["| method | path | ACC mean ± std | NMI mean ± std | seconds per run |", "|---|---|---:|---:|---:|"]
    for r in rows:
        for p in ("fp32", "default"):
            lines.append(f"| {r['method']} | {p} | {_mean_std(r['scores'][p]['acc'])} |"
                         f" {_mean_std(r['scores'][p]['nmi'])} | {np.mean(r['seconds'][p]):.1f} |")
    lines += ["", "Paired by seed, default - fp32 (paired t-test over seeds; McNemar on the per-image"
              " right/wrong of the matched clusters, pooled over seeds). Seed noise: the std of the fp32 seeds.", "",
              "| method | ΔACC mean ± std | p (t) | ΔNMI mean ± std | p (t) | McNemar p | ΔACC within the fp32 seed std |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        d = {m: np.subtract(r["scores"]["default"][m], r["scores"]["fp32"][m]) for m in METRICS}
        noise = np.std(r["scores"]["fp32"]["acc"], ddof=1) if len(r["seeds"]) > 1 else 0.0
        within = "yes" if abs(d["acc"].mean()) <= noise else "no"
        lines.append(f"| {r['method']} | {_mean_std(d['acc'])} | {r['paired_t']['acc']['p_value']:.3f} |"
                     f" {_mean_std(d['nmi'])} | {r['paired_t']['nmi']['p_value']:.3f} |"
                     f" {r['mcnemar']['p_value']:.3g} | {within} |")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=["mice", "moco"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--epochs", type=int, default=0, help="budget override (default: the profile's)")
    p.add_argument("--subset", type=int, default=0, help="budget override (default: the profile's)")
    p.add_argument("--runs", default=str(REPO / "runs" / "amp_numerics"), help="where the runs are kept")
    p.add_argument("--quick", action="store_true", help="seconds: smoke profile, 1 epoch, seeds 0 1")
    p.add_argument("--out", default=None, help="default: results/benchmarks/amp_numerics_cpu.md (+ .json)")
    args = p.parse_args(argv)
    if args.quick:
        args.profile, args.epochs, args.seeds = "smoke", 1, args.seeds[:2]
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds must be distinct (got {args.seeds})")
    for name in ("epochs", "subset"):
        if getattr(args, name) < 0:
            p.error(f"--{name} must be >= 0 (got {getattr(args, name)})")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out) if args.out else REPO / "results" / "benchmarks" / "amp_numerics_cpu.md"
    load_start = os.getloadavg()
    rows = [method_rows(m, args) for m in args.methods]
    prov = {**provenance("cpu"), "profile": args.profile, "seeds": args.seeds,
            "budget": {"epochs": args.epochs or "profile", "subset": args.subset or "profile"},
            "load_average_start": [round(x, 2) for x in load_start],
            "command": "python benchmarks/amp_numerics.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    defaults = ", ".join(f"{r['method']}: amp={r['amp_default']}" for r in rows)
    text = "\n".join([
        f"# float32 vs the default precision: clustering quality over seeds ({args.profile} profile)", "",
        *(["QUICK MODE: a check of the script; these numbers mean nothing.", ""] if args.quick else []),
        f"Each method trained {len(args.seeds)} times per path (seeds {', '.join(map(str, args.seeds))}); `fp32`:"
        " `train.amp=false`; `default`: `train.amp` as the `cpu` profile sets it"
        f" ({defaults}), bf16 autocast where the CPU"
        " has native bf16. Budget: " + ("the profile's." if not (args.epochs or args.subset) else
                                        f"epochs={args.epochs or 'profile'}, subset={args.subset or 'profile'}."),
        "", *tables(rows), "", "## Provenance", "", "```", *(f"{k}: {v}" for k, v in prov.items()), "```", ""])
    io.write_text(out, text)
    io.write_json(out.with_suffix(".json"), {"provenance": prov, "methods": rows, "quick": args.quick})
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()

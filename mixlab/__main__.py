"""Command line: ``python -m mixlab train|eval|config|list|reproduce`` — the same code the notebooks call.

Paths given on the command line (``--out``, ``--run``, ``--params``) are taken from the shell's
working directory; the defaults the notebooks use from the workbook root (:mod:`mixlab.utils.paths`)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from mixlab import engine
from mixlab.config import DATA_FIELDS, PROFILES, ConfigError, load_param_file, parse_data_set, parse_set, resolve
from mixlab.engine import NonFiniteLoss
from mixlab.rundir import CheckpointError

EPILOG = """examples:
  python -m mixlab train --method mice --dataset fashion-mnist --profile cpu --seed 0 --out runs/mice0
  python -m mixlab train --method siammm --profile smoke --out /tmp/s --set n_clusters=50 --set lr=0.1
  python -m mixlab eval --run runs/mice0
  python -m mixlab train --method mice --dataset folder:~/Pictures/birds --profile cpu --out runs/birds
  python -m mixlab predict --run runs/birds --dataset folder:~/Pictures/new-birds --out new-birds.csv
  python -m mixlab predict ... --set skip_unreadable=true   (skip files that are not readable images)
  python -m mixlab config --method nmm --profile gpu
  torchrun --nproc_per_node=2 -m mixlab train --method moco --profile smoke --out /tmp/ddp
  python -m mixlab --debug train ...   (or MIXLAB_DEBUG=1): full traceback instead of a one-line error
"""


def _whole_number(text: str) -> int:
    """argparse type: an integer >= 1, else a one-line error saying so."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mixlab", description="mixlab: deep clustering with mixture "
                                "models and EM.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true",
                   help="on an error, show the full traceback instead of one line (also: MIXLAB_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)

    def run_options(q):
        q.add_argument("--method", required=True, help="mice, moco, siammm, nmm or tcc")
        q.add_argument("--profile", default="cpu", choices=PROFILES, help="settings preset (default: cpu)")
        q.add_argument("--dataset", help="dataset name, or folder:PATH for a directory of your own images"
                       " (default: the profile's, fashion-mnist)")
        q.add_argument("--seed", type=int, help="training seed (default 0)")
        q.add_argument("--params", help="YAML file with 'train:' and 'method:' sections")
        q.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="override one field (train.* or method.*; bare names if unambiguous); repeatable")

    t = sub.add_parser("train", help="train a method; writes config.json, log.jsonl, checkpoint.pt, metrics.json")
    run_options(t)
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    e = sub.add_parser("eval", help="re-evaluate a finished run from its checkpoint")
    e.add_argument("--run", required=True, help="run directory written by train")
    a = sub.add_parser("predict", help="assign the images of a dataset with a finished run; writes a CSV")
    a.add_argument("--run", required=True, help="run directory written by train")
    a.add_argument("--dataset", required=True, help="folder:PATH (or a registered dataset of the run's image shape)")
    a.add_argument("--out", required=True, help="CSV file to write (path or index, cluster, probability)")
    a.add_argument("--channels", type=int, choices=(1, 3), help="convert the images to this many channels")
    a.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help=f"how to read the images, as for train: {', '.join(DATA_FIELDS)}"
                        " (e.g. --set skip_unreadable=true); repeatable")
    a.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    c = sub.add_parser("config", help="print the resolved configuration of a run without training")
    run_options(c)
    r = sub.add_parser("reproduce", help="execute every notebook of notebooks/manifest.yaml with papermill")
    r.add_argument("--profile", default="cpu", choices=PROFILES, help="parameter set (default: cpu)")
    r.add_argument("--only", action="append", metavar="NOTEBOOK",
                   help="run just this notebook of the manifest (e.g. em_elbo_primer); repeatable")
    r.add_argument("--force", action="store_true", help="re-run notebooks even if nothing changed")
    r.add_argument("--jobs", type=_whole_number, metavar="N",
                   help="notebooks to run at once (default: all; their runs share one Dask cluster)")
    r.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler for the notebooks' runs (tcp://HOST:PORT or a scheduler file; default:"
                        " $MIXLAB_SCHEDULER, else a local cluster of one worker per core or GPU; none: no Dask)")
    r.add_argument("--train-only", action="store_true",
                   help="train every run the notebooks declare (seed by seed) without executing the notebooks;"
                        " a later reproduce reuses them")
    r.add_argument("--draw-only", action="store_true",
                   help="train nothing: the notebooks draw from the runs finished or recorded so far"
                        " (MIXLAB_DRAW_ONLY=1; their tables say how many seeds each row has)")
    r.add_argument("--runner", choices=("papermill", "script"),
                   help="papermill (default when installed) or script (runs the paired .py files)")
    sub.add_parser("notebooks", help="save every notebook pair as JupyterLab + jupytext do, outputs stripped "
                   "(run before committing a notebook edited in the lab)")
    sub.add_parser("list", help="list methods, datasets and profiles")
    return p


def _config(args):
    """Profile files, then --params, then --dataset/--seed, then --set (mixlab.config.resolve)."""
    from mixlab.methods import get_method

    layers = [load_param_file(args.params)] if args.params else []
    layers.append({"train": {k: v for k, v in (("dataset", args.dataset), ("seed", args.seed)) if v is not None}})
    layers.append(parse_set(args.set, get_method(args.method)))
    return resolve(args.method, args.profile, *layers)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for option in ("out", "run", "params"):  # typed paths mean the shell's working directory
        if getattr(args, option, None):
            setattr(args, option, str(Path(getattr(args, option)).expanduser().absolute()))
    try:
        if args.command == "list":
            from mixlab.data import dataset_names
            from mixlab.methods import method_names
            print("methods: " + ", ".join(method_names()))
            print("datasets: " + ", ".join(dataset_names()))
            print("profiles: " + ", ".join(PROFILES))
            return 0
        if args.command == "notebooks":
            from mixlab.workbook import notebooks
            print("normalized: " + ", ".join(notebooks.normalize()))
            return 0
        if args.command == "reproduce":
            from mixlab.workbook import notebooks, pipeline
            start = time.perf_counter()
            if args.draw_only:
                os.environ["MIXLAB_DRAW_ONLY"] = "1"
            if args.train_only:
                rows = pipeline.train(args.profile, only=args.only, force=args.force, scheduler=args.scheduler)
                print(f"[train] {len(rows)} runs of profile {args.profile} in {time.perf_counter() - start:.0f} s")
                return 0
            try:
                pipeline.reproduce(args.profile, only=args.only, force=args.force, runner=args.runner,
                                   jobs=args.jobs, scheduler=args.scheduler)
            except notebooks.NotebookFailed as exc:
                print(f"mixlab: error: {exc}; notebooks before it kept their results", file=sys.stderr)
                return 1
            print(f"[reproduce] profile {args.profile} finished in {time.perf_counter() - start:.0f} s")
            return 0
        if args.command == "predict":
            from mixlab import evaluation
            data = parse_data_set(args.set)
            if args.channels is not None:
                data["channels"] = args.channels
            rows = evaluation.predict(args.run, args.dataset, args.out, device=args.device, **data)
            print(f"[predict] {len(rows)} images assigned to {rows['cluster'].nunique()} clusters -> {args.out}")
            return 0
        if args.command == "eval":
            print(json.dumps(engine.reevaluate(args.run), indent=2))
            return 0
        cfg = _config(args)
        if args.command == "config":
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        result = engine.train(cfg, args.out, resume=args.resume)
        from mixlab.utils import distributed
        main_process = distributed.is_main()
        distributed.shutdown()  # only after success: a failed rank must not wait at a barrier
        if main_process:  # the other ranks' results lack what only rank 0 computes (objective, files)
            keys = ("acc", "nmi", "ari", "ami") if "acc" in result else ("n_nonempty", "max_cluster_frac", "objective")
            print(json.dumps({k: result[k] for k in keys}))
        return 0
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, NonFiniteLoss, CheckpointError) as exc:
        if args.debug or os.environ.get("MIXLAB_DEBUG", "0") not in ("", "0"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"mixlab: error: {message}", file=sys.stderr)
        return 2 if isinstance(exc, (ConfigError, FileNotFoundError, FileExistsError)) else 1
    except KeyboardInterrupt:
        print("mixlab: interrupted; resume with --resume", file=sys.stderr)
        return 130


def _one_line_warnings() -> None:
    """Show mixlab's own warnings (e.g. skipped files) as one line ``mixlab: warning: <message>``, like
    its other notes, instead of Python's two lines with the source; others keep Python's format."""
    package = str(Path(__file__).resolve().parent)
    default = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None):
        if str(Path(filename).resolve()).startswith(package):
            return f"mixlab: warning: {str(message).splitlines()[0] if str(message) else category.__name__}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning


if __name__ == "__main__":
    _one_line_warnings()
    sys.exit(main())

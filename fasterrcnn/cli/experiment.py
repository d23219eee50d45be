"""`fasterrcnn experiment`: the paper's experiments (Sec. 4.1) trained, evaluated and checked."""

from __future__ import annotations

import argparse

from fasterrcnn.experiments import EXPERIMENTS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="rerun one of the paper's experiments (anchors, proposals, schedule, lambda, recall) and check its trend",
        description=(
            "Train and evaluate the detectors of one of the paper's experiments on the embedded synthetic data set\n"
            "(or --data), print the paper's table beside the measured one, and say for each of the paper's trends\n"
            "whether it held (held / not held / tie, with the figures). NAME is one of:\n\n"
            + "\n".join(f"  {k:<10} {v[1]}" for k, v in EXPERIMENTS.items())
            + "\n  all        the five, in this order\n\n"
            "Writes OUT/NAME/result.json, result.md (the table, ready to paste) and NAME.png. Training runs go to\n"
            "OUT/runs/ and are reused by later experiments in the same --out (the baseline, 3 scales x 3 ratios,\n"
            "lambda 10, joint training, is shared by all five); delete OUT/runs to train them again.\n"
            "--budget quick takes about 70 s for all five (tiny images: it checks the pipeline, not the trends);\n"
            "full is what BENCHMARKS.md reports (about 30 minutes for all five on 2 CPU cores). Examples:\n\n"
            "  fasterrcnn experiment anchors --budget quick\n"
            "  fasterrcnn experiment all --budget full --out runs/experiments/full\n"
            "  fasterrcnn experiment all --budget full --out runs/experiments/full --show   # print the tables again"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", metavar="NAME", help="one of: " + ", ".join([*EXPERIMENTS, "all"]))
    p.add_argument("--data", default=None,
                   help="a data set with 'train' and 'test' splits (VOC, COCO, YOLO, LabelMe; default: the synthetic "
                        "set generated into OUT/data)")
    p.add_argument("--budget", default="quick", help="quick (CI, about 70 s for all five) or full (about 30 min) (BENCHMARKS.md); default quick")
    p.add_argument("--out", default=None, help="output folder (default runs/experiments/BUDGET)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of every run (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier result of the experiment in OUT/NAME (and a synthetic set of other settings)")
    p.add_argument("--show", action="store_true", help="print the Markdown of the results already in --out; run nothing")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=run)


def _names(name: str) -> list[str]:
    from fasterrcnn.experiments import experiment_module

    if name == "all":
        return list(EXPERIMENTS)
    experiment_module(name)  # ConfigError naming NAME
    return [name]


def _command(args: argparse.Namespace, name: str, out: str) -> str:
    parts = ["fasterrcnn experiment", name, "--budget", args.budget, "--out", out]
    if args.data is not None:
        parts += ["--data", args.data]
    if args.seed:
        parts += ["--seed", str(args.seed)]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from fasterrcnn.experiments import run_experiment
    from fasterrcnn.experiments.budgets import budget
    from fasterrcnn.experiments.report import RESULT_FILES, markdown, read_result
    from fasterrcnn.experiments.workspace import Workspace
    from fasterrcnn.outputs import claim_outputs

    names = _names(args.name)
    chosen = budget(args.budget)
    out = args.out or f"runs/experiments/{chosen.name}"
    if args.show:
        for name in names:
            print(markdown(read_result(Path(out) / name)))
        return 0
    for name in names:  # every output is checked before the first run starts
        claim_outputs(Path(out) / name, [*RESULT_FILES, f"{name}.png"], inputs=[args.data], overwrite=args.overwrite,
                      what=f"an earlier result of the {name} experiment",
                      hint="choose another --out, or pass --overwrite to replace it (its training runs are reused)")
    start = time.perf_counter()
    ws = Workspace.prepare(out, chosen, args.data, overwrite=args.overwrite, progress=args.progress, threads=args.threads,
                           seed=args.seed)
    results = []
    for name in names:
        result = run_experiment(name, ws, command=_command(args, name, out))
        print("\n" + markdown(result))
        results.append(result)
    if len(results) > 1:
        print("summary")
        for r in results:
            print(f"  {r['experiment']:<10} {r['trends_held']} of {r['trends_total']} trends held   {r['seconds']:.0f} s")
    print(f"\nexperiment {args.name} ({chosen.name} budget) finished in {time.perf_counter() - start:.0f} s; results under {out}/")
    return 0

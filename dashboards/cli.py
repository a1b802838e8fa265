"""`python -m dashboards <verb>`: compare, report, retrievals, compress-report.

Each verb turns flags into a call of its module's plain function, prints what it wrote and,
with `--json FILE`, writes the summary of what was drawn. A user's mistake is a `UserError`:
one line on stderr, exit status 2, nothing written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vpr_core.errors import exit_status


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"error: {message}; see `{self.prog} --help`\n")
        raise SystemExit(2)


def _common(parser, experiment: str | None = "optional") -> None:
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow store the runs are in (default sqlite:///<cwd>/mlflow.db)")
    if experiment:
        parser.add_argument("--experiment", metavar="NAME", required=experiment == "required",
                            help="MLflow experiment name (default: the one of the latest sweep)")
    parser.add_argument("--json", metavar="FILE", help="also write a summary of what was drawn")


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m dashboards",
                           description="Pictures of NetVLAD runs tracked in MLflow.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=OneLineParser)
    verbs.required = True

    compare = verbs.add_parser("compare", help="Recall@N curves of several runs on one chart")
    _common(compare, experiment=None)
    chosen = compare.add_mutually_exclusive_group()
    chosen.add_argument("--experiment", metavar="NAME",
                        help="best trial per architecture plus every evaluation run of NAME "
                             "(default: the experiment of the latest sweep)")
    chosen.add_argument("--runs", nargs="+", metavar="RUN_ID", help="these MLflow runs")
    for arch in ("alexnet", "vgg16"):
        compare.add_argument(f"--{arch}-recalls", f"--{arch}_recalls", dest=f"{arch}_recalls",
                             nargs="+", type=float, metavar="R",
                             help=f"{arch}'s Recall@1 @5 @10 @20, fractions or percent "
                                  f"(needs no MLflow)")
    compare.add_argument("--out", required=True, metavar="FILE.png", help="PNG to write")
    compare.add_argument("--log-to", metavar="RUN_ID", help="also log the PNG to this run "
                                                            "(artifact folder plots/)")
    compare.add_argument("--title", help="chart title (default Recall@N, <experiment>)")

    study = verbs.add_parser("compress-report",
                             help="a compression study: Recall@5 against size and latency")
    _common(study, experiment=None)
    study.add_argument("--study", metavar="NAME", help="the study (default: the latest)")
    study.add_argument("--out", required=True, metavar="FILE.png", help="PNG to write")

    report = verbs.add_parser("report", help="static HTML report of a sweep")
    _common(report)
    which = report.add_mutually_exclusive_group()
    which.add_argument("--sweep", metavar="NAME", help="the latest sweep of this name")
    which.add_argument("--parent", metavar="RUN_ID", help="the sweep with this parent run")
    report.add_argument("--out", required=True, metavar="DIR",
                        help="folder for index.html and its pictures (replaced if a report)")
    report.add_argument("--mlflow-url", metavar="URL",
                        help="MLflow UI address (http://host:port) to link each trial to")

    retrieval = verbs.add_parser("retrievals", help="top-k matches of queries, framed "
                                                    "green (true positive) or red")
    _common(retrieval, experiment=None)
    source = retrieval.add_mutually_exclusive_group(required=True)
    source.add_argument("--resume", metavar="FILE|RUN_DIR", help="checkpoint file or run folder")
    source.add_argument("--run", metavar="RUN_ID", help="an MLflow run's best checkpoint")
    retrieval.add_argument("--ckpt", choices=("latest", "best"), default="latest",
                           help="with a run folder: which checkpoint (default latest)")
    retrieval.add_argument("--data-root", metavar="DIR", help="dataset root (default: the run's)")
    retrieval.add_argument("--dataset", help="which <name>_<split>.mat when several")
    retrieval.add_argument("--split", default="val", help="split to rank (default val)")
    retrieval.add_argument("--image-size", metavar="HxW", help="default: the run's, else native")
    for flag, default, help_text in (("--queries", 8, "rows to draw (default 8)"),
                                     ("--top-k", 5, "matches per query (default 5)"),
                                     ("--seed", 0, "which queries are drawn (default 0)")):
        retrieval.add_argument(flag, type=int, default=default, metavar="N", help=help_text)
    retrieval.add_argument("--only-wrong", action="store_true",
                           help="only queries whose top-1 match is not a true positive")
    retrieval.add_argument("--out", required=True, metavar="FILE.png", help="PNG to write")
    retrieval.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    retrieval.add_argument("--workers", type=int, metavar="N",
                           help="image-loading worker processes")
    retrieval.add_argument("--cache-batch-size", type=int, default=24, dest="batch_size",
                           metavar="N", help="images per forward pass (default 24)")
    return parser


def run_compare(args) -> tuple[dict, list[str]]:
    from .compare import compare

    given = {arch: getattr(args, f"{arch}_recalls") for arch in ("alexnet", "vgg16")
             if getattr(args, f"{arch}_recalls") is not None}
    summary = compare(Path(args.out), tracking_uri=args.tracking_uri,
                      experiment=args.experiment, run_ids=args.runs, given=given,
                      log_to=args.log_to, title=args.title)
    lines = [f"wrote {summary['out']} ({len(summary['curves'])} curves: "
             f"{'; '.join(c['label'] for c in summary['curves'])})"]
    if args.log_to:
        lines.append(f"logged it to run {args.log_to} under plots/")
    return summary, lines


def run_report(args) -> tuple[dict, list[str]]:
    from .report import write_report

    summary = write_report(args.tracking_uri, args.experiment, Path(args.out), args.parent,
                           args.mlflow_url, args.sweep)
    return summary, [summary["index"]]


def run_retrievals(args) -> tuple[dict, list[str]]:
    from .retrievals import RetrievalSettings, retrievals

    settings = RetrievalSettings(
        out=Path(args.out), resume=Path(args.resume) if args.resume else None, ckpt=args.ckpt,
        run_id=args.run, tracking_uri=args.tracking_uri,
        data_root=Path(args.data_root) if args.data_root else None, dataset=args.dataset,
        split=args.split, image_size=args.image_size, queries=args.queries, top_k=args.top_k,
        seed=args.seed, only_wrong=args.only_wrong, device=args.device, workers=args.workers,
        batch_size=args.batch_size)
    summary = retrievals(settings)
    return summary, [f"wrote {summary['out']} ({len(summary['rows'])} queries x top-"
                     f"{summary['top_k']}: {summary['green_frames']} green, "
                     f"{summary['red_frames']} red frames; {summary['arch']} "
                     f"K={summary['num_clusters']} on {summary['dataset']} {summary['split']})"]


def run_compress_report(args) -> tuple[dict, list[str]]:
    from .compress_report import compress_report

    summary = compress_report(args.tracking_uri, args.study, Path(args.out))
    lines = [f"wrote {summary['out']} (study {summary['study']}: "
             f"{len(summary['variants'])} variants)"]
    for row in summary["variants"]:
        lines.append(f"  {row['variant']:<30} R@5 {_number(row['recall@5'], '.3f')}  "
                     f"{_number(row['size_mb'], '.1f')} MB  "
                     f"{_number(row['latency_cpu_b1_ms'], '.1f')} ms/image")
    return summary, lines


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


VERBS = {"compare": run_compare, "report": run_report, "retrievals": run_retrievals,
         "compress-report": run_compress_report}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def command() -> None:
        args = build_parser().parse_args(argv)
        summary, lines = VERBS[args.verb](args)
        if args.json:
            from vpr_core.fileio import write_json_atomic

            write_json_atomic(Path(args.json).absolute(), summary)
        for line in lines:
            print(line, flush=True)

    return exit_status(command)

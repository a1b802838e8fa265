"""`python -m dashboards <verb>`: compare, report, retrievals, compress-report.

Each verb turns flags into a call of its module's plain function, prints what it wrote and,
with `--json FILE`, writes the summary of what was drawn. A user's mistake is a `UserError`:
one line on stderr, exit status 2, nothing written.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from vpr_core import arguments
from vpr_core.errors import exit_status

STORE_HELP = "MLflow store the runs are in (default sqlite:///<cwd>/mlflow.db)"
EXPERIMENT_HELP = "MLflow experiment name (default: the one of the latest sweep)"
JSON_HELP = "also write a summary of what was drawn"


def _common(parser, experiment: bool = True) -> None:
    arguments.add_tracking(parser, uri_help=STORE_HELP,
                           experiment_help=EXPERIMENT_HELP if experiment else None)
    arguments.add_json(parser, JSON_HELP, quiet=False)


def build_parser() -> arguments.OneLineParser:
    parser = arguments.OneLineParser(prog="python -m dashboards",
                                     description="Pictures of NetVLAD runs tracked in MLflow.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB",
                                  parser_class=arguments.OneLineParser)
    verbs.required = True
    _add_compare(verbs)

    study = verbs.add_parser("compress-report",
                             help="a compression study: Recall@5 against size and latency")
    _common(study, experiment=False)
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
    _add_retrievals(verbs)
    return parser


def _add_compare(verbs) -> None:
    compare = verbs.add_parser("compare", help="Recall@N curves of several runs on one chart")
    _common(compare, experiment=False)
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


def _add_retrievals(verbs) -> None:
    from .retrievals import RetrievalSettings

    retrieval = verbs.add_parser("retrievals", help="top-k matches of queries, framed "
                                                    "green (true positive) or red")
    _common(retrieval, experiment=False)
    source = retrieval.add_mutually_exclusive_group(required=True)
    source.add_argument("--resume", metavar="FILE|RUN_DIR", help="checkpoint file or run folder")
    source.add_argument("--run", metavar="RUN_ID", help="an MLflow run's best checkpoint")
    retrieval.add_argument("--ckpt", choices=("latest", "best"),
                           help="with a run folder: which checkpoint "
                                f"(default {arguments.default(RetrievalSettings, 'ckpt')})")
    arguments.add_data(retrieval, split_default=arguments.default(RetrievalSettings, "split"),
                       default_from="the run's")
    for flag, help_text in (("--queries", "rows to draw"), ("--top-k", "matches per query"),
                            ("--seed", "which queries are drawn")):
        name = flag[2:].replace("-", "_")
        retrieval.add_argument(flag, type=int, metavar="N", help=f"{help_text} (default "
                               f"{arguments.default(RetrievalSettings, name)})")
    retrieval.add_argument("--only-wrong", action="store_true",
                           help="only queries whose top-1 match is not a true positive")
    retrieval.add_argument("--out", required=True, metavar="FILE.png", help="PNG to write")
    arguments.add_compute(retrieval.add_argument_group("runtime"), RetrievalSettings)


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

    # flags not given (None) leave RetrievalSettings' own defaults in place
    paths = ("out", "resume", "run_id", "data_root")
    names = [f.name for f in dataclasses.fields(RetrievalSettings) if f.name not in paths]
    settings = RetrievalSettings(
        out=Path(args.out), resume=Path(args.resume) if args.resume else None, run_id=args.run,
        data_root=Path(args.data_root) if args.data_root else None,
        **arguments.given(args, names))
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
        arguments.emit(args, summary, lines)

    return exit_status(command)

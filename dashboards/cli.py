"""`python -m dashboards <verb>`: compare, report, retrievals, compress-report, benchmark.

Each verb turns flags into a call of its module's plain function, prints what it wrote and,
with `--json FILE`, writes the summary of what was drawn. A user's mistake is a `UserError`:
one line on stderr, exit status 2, nothing written.
"""
from __future__ import annotations

import sys
from pathlib import Path

from vpr_core import arguments
from vpr_core.errors import UserError, exit_status
from vpr_core.models.catalog import CNNS as TYPED_ARCHES
from vpr_tracking.flags import add_tracking

STORE_HELP = "MLflow store the runs are in (default sqlite:///<cwd>/mlflow.db)"
EXPERIMENT_HELP = "MLflow experiment name (default: the one of the latest sweep)"
JSON_HELP = "also write a summary of what was drawn"


def _common(parser, experiment: bool = True) -> None:
    add_tracking(parser, uri_help=STORE_HELP,
                 experiment_help=EXPERIMENT_HELP if experiment else None)
    arguments.add_json(parser, JSON_HELP)


def build_parser(verb: str | None = None) -> arguments.OneLineParser:
    """The parser of every verb. `verb`: the one about to run; the retrievals' flags are
    built for it alone (they come from settings declared beside torch, which the other verbs
    need not import)."""
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
    _add_benchmark(verbs)
    _add_retrievals(verbs, full=verb == "retrievals")
    return parser


def _add_benchmark(verbs) -> None:
    benchmark = verbs.add_parser("benchmark", help="a benchmark's models x test sets table "
                                                   "as an HTML page and a PNG")
    _common(benchmark, experiment=False)
    benchmark.add_argument("--experiment", metavar="NAME",
                           help="MLflow experiment name (default: any)")
    which = benchmark.add_mutually_exclusive_group()
    which.add_argument("--name", metavar="NAME", help="the latest benchmark of this name "
                                                      "(default: the latest benchmark)")
    which.add_argument("--parent", metavar="RUN_ID", help="the benchmark with this parent run")
    benchmark.add_argument("--out", required=True, metavar="DIR",
                           help="folder for index.html and benchmark.png")


def _add_compare(verbs) -> None:
    compare = verbs.add_parser("compare", help="Recall@N curves of several runs on one chart")
    _common(compare, experiment=False)
    chosen = compare.add_mutually_exclusive_group()
    chosen.add_argument("--experiment", metavar="NAME",
                        help="best trial per architecture plus every evaluation run of NAME "
                             "(default: the experiment of the latest sweep)")
    chosen.add_argument("--runs", nargs="+", metavar="RUN_ID", help="these MLflow runs")
    compare.add_argument("--recalls", nargs="+", action="append", metavar="NAME R",
                         help="a model's name and its Recall@1 @5 @10 @20, fractions or "
                              "percent (needs no MLflow; repeat for more models)")
    for arch in TYPED_ARCHES:  # the old generate_plots.py's flags
        compare.add_argument(f"--{arch}-recalls", f"--{arch}_recalls", dest=f"{arch}_recalls",
                             nargs="+", type=float, metavar="R",
                             help=f"same as --recalls {arch} R ...")
    compare.add_argument("--out", required=True, metavar="FILE.png", help="PNG to write")
    compare.add_argument("--log-to", metavar="RUN_ID", help="also log the PNG to this run "
                                                            "(artifact folder plots/)")
    compare.add_argument("--title", help="chart title (default Recall@N, <experiment>)")


def _add_retrievals(verbs, full: bool) -> None:
    retrieval = verbs.add_parser("retrievals", help="top-k matches of queries, framed "
                                                    "green (true positive) or red")
    if not full:
        return
    from .retrievals import RetrievalSettings

    _common(retrieval, experiment=False)
    arguments.add_settings(retrieval, RetrievalSettings, required=("out",))


def typed_recalls(entries: list[list[str]]) -> dict:
    """{name: [recalls]} of `--recalls NAME R1 R5 R10 R20` entries."""
    given = {}
    for name, *values in entries:
        try:
            given[name] = [float(v) for v in values]
        except ValueError:
            raise UserError(f"--recalls {name} {' '.join(values)}: write a model's name and "
                            f"its Recall@1 @5 @10 @20, e.g. --recalls resnet50-gem 0.8 0.9 "
                            f"0.93 0.95") from None
    return given


def run_compare(args) -> tuple[dict, list[str]]:
    from .compare import compare

    given = {arch: getattr(args, f"{arch}_recalls") for arch in TYPED_ARCHES
             if getattr(args, f"{arch}_recalls") is not None}
    given.update(typed_recalls(args.recalls or []))
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

    summary = retrievals(RetrievalSettings(**arguments.given(args, RetrievalSettings)))
    return summary, [f"wrote {summary['out']} ({len(summary['rows'])} queries x top-"
                     f"{summary['top_k']}: {summary['green_frames']} green, "
                     f"{summary['red_frames']} red frames; {summary['model']} on "
                     f"{summary['dataset']} {summary['split']})"]


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


def run_benchmark(args) -> tuple[dict, list[str]]:
    from .benchmark_report import benchmark_report

    summary = benchmark_report(args.tracking_uri, args.experiment, args.name, args.parent,
                               Path(args.out))
    return summary, [f"wrote {summary['index']} and {summary['picture']} (benchmark "
                     f"{summary['name']}: {len(summary['models'])} models x "
                     f"{len(summary['test_sets'])} test sets)", *summary["table"]]


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


VERBS = {"compare": run_compare, "report": run_report, "retrievals": run_retrievals,
         "compress-report": run_compress_report, "benchmark": run_benchmark}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def command() -> None:
        verb = next((arg for arg in argv if not arg.startswith("-")), None)
        args = build_parser(verb).parse_args(argv)
        summary, lines = VERBS[args.verb](args)
        arguments.emit(args, summary, lines)

    return exit_status(command)

"""Command line: run, list, show, validate, predict, export, app. No science here: it parses, calls and prints."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from surrogate.core.case import CaseError, load_case

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="surrogate", description="Scientific-ML surrogates judged against their solvers.")
    p.add_argument("--results", default="results", help="folder of run folders (default: ./results)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a case file end to end (resumes an interrupted run of the same case)")
    r.add_argument("case", help="case file, e.g. cases/lorenz96_mno.yaml")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="override any key, e.g. train.epochs=5")
    r.add_argument("--profile", "-p", default=None, help="a named profile of the case file, e.g. smoke")
    r.add_argument("--fresh", action="store_true", help="start a new run even if an interrupted one exists")
    r.add_argument("--quiet", "-q", action="store_true", help="print only errors")

    v = sub.add_parser("validate", help="check a case file (and its profiles) without running anything")
    v.add_argument("case")
    v.add_argument("overrides", nargs="*", metavar="key=value")
    v.add_argument("--profile", "-p", default=None)

    sub.add_parser("list", help="the cases in cases/ and the runs in results/")

    pr = sub.add_parser("predict", help="predict with a trained surrogate on a new input file (mmgp: a mesh)")
    pr.add_argument("run", help="a run folder, or a case name for its latest run")
    pr.add_argument("--mesh", required=True, help="the input mesh (any format meshio reads)")
    pr.add_argument("--out", "-o", required=True, help="where to write the prediction (a mesh file)")
    pr.add_argument("--scalar", "-s", action="append", default=[], metavar="name=value",
                    help="an input scalar, e.g. -s load=30 -s shear=0.5 -s young=100")
    pr.add_argument("--method", default=None, help="a baseline of the run instead of its surrogate")
    pr.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    e = sub.add_parser("export", help="write a trained surrogate for use outside Python or this package")
    e.add_argument("run", help="a run folder, or a case name for its latest run")
    e.add_argument("--format", "-f", required=True, dest="fmt",
                   help="lorenz96: numpy, torchscript; pinn: torchscript, onnx; mmgp: numpy; "
                        "prose: torchscript, onnx; dragonfly: torchscript")
    e.add_argument("--method", default=None, help="a baseline of the run instead of its surrogate")

    s = sub.add_parser("show", help="the metrics table of a run")
    s.add_argument("run", help="a run folder, or a case name for its latest run")

    a = sub.add_parser("app", help="start the Streamlit explorer on the results folder and print its address")
    a.add_argument("--port", type=int, default=8501, help="local port (default: 8501)")
    return p


def cmd_run(args) -> int:
    from surrogate.core.runner import run_case

    case = load_case(args.case, args.profile, args.overrides)
    run_case(case, args.results, fresh=args.fresh, quiet=args.quiet)
    return 0


def cmd_validate(args) -> int:
    from surrogate.core.case import read_yaml

    case = load_case(args.case, args.profile, args.overrides)
    checked = [args.profile or "default"]
    if args.profile is None:  # also check every profile the file defines
        for name in read_yaml(Path(args.case)).get("profiles") or {}:
            load_case(args.case, name, args.overrides)
            checked.append(name)
    print(f"{args.case}: valid (pipeline {case.pipeline}; profiles checked: {', '.join(checked)})")
    return 0


def cmd_list(args) -> int:
    from surrogate.core.store import list_runs

    cases = sorted(Path("cases").glob("*.yaml"))
    print("cases:" if cases else "cases: none in ./cases")
    for c in cases:
        print(f"  {c}")
    runs = list_runs(args.results)
    first = cases[0] if cases else "CASE"
    print(f"runs in {args.results}:" if runs else f"runs: none in {args.results} yet; try `surrogate run {first}`")
    for run in runs:
        head = (run.metrics() or {}).get("headline") or {}
        metric = f"{head['method']} {head['metric']} = {head['value']:.4g}" if head else ""
        meta = run.meta()
        profile = meta.get("profile") or "default"
        print(f"  {run.path.parent.name}/{run.path.name}  {run.status:<11} {profile:<8} {metric}")
    return 0


def cmd_show(args) -> int:
    from surrogate.core.report import metrics_list, metrics_table
    from surrogate.core.store import resolve_run

    run = resolve_run(args.run, args.results)
    meta = run.meta()
    print(f"{run.path}\n  case {meta.get('case')}  profile {meta.get('profile') or 'default'}  status {run.status}"
          f"  device {meta.get('device')}  wall {meta.get('wall_seconds', '-')} s")
    metrics = run.metrics()
    if metrics is None:
        print("  no metrics yet" + (f" (error: {meta['error']})" if meta.get("error") else ""))
        return 0
    main = metrics.get("table_metrics")
    print(metrics_table(metrics, main))
    rest = [r for r in metrics["rows"] if main and r["metric"] not in main]
    if rest:
        print("\nfurther metrics:")
        print(metrics_list(rest))
    return 0


def cmd_app(args) -> int:
    from surrogate.app_launcher import launch

    return launch(args.port, args.results)


PREDICTORS = {"mmgp": "surrogate.mmgp.meshes:predict_file"}


def cmd_predict(args) -> int:
    import importlib

    from surrogate.core.store import resolve_run

    run = resolve_run(args.run, args.results)
    family = run.meta().get("family")
    if family not in PREDICTORS:
        raise CaseError(f"surrogate predict works on runs of: {', '.join(PREDICTORS)}; {run.path} is {family}. "
                        "Use surrogate.load(run) in Python instead.")
    scalars = {}
    for text in args.scalar:
        name, sep, value = text.partition("=")
        try:
            scalars[name.strip()] = float(value)
        except ValueError:
            raise CaseError(f"--scalar {text!r}: expected name=number, e.g. load=30") from None
        if not sep or not name.strip():
            raise CaseError(f"--scalar {text!r}: expected name=number, e.g. load=30")
    module, _, attr = PREDICTORS[family].partition(":")
    predict_file = getattr(importlib.import_module(module), attr)
    try:
        predict_file(run.path, args.mesh, args.out, scalars, method=args.method, overwrite=args.overwrite)
    except (ValueError, KeyError, FileExistsError) as err:  # bad mesh, missing scalar, existing output
        raise CaseError(str(err.args[0] if isinstance(err, KeyError) else err)) from None
    print(f"wrote {args.out}: prediction and standard deviation of every field of {run.path.name}")
    return 0


def cmd_export(args) -> int:
    from surrogate.core.export import export_run
    from surrogate.core.store import resolve_run

    folder, check = export_run(resolve_run(args.run, args.results), args.fmt, args.method)
    print(f"wrote {folder}: {', '.join(check['files'])}\n  checked against the model: largest relative "
          f"difference {check['max_rel_error']:.2g} (allowed {check['tolerance']:g})")
    return 0


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "list": cmd_list, "show": cmd_show, "app": cmd_app,
            "predict": cmd_predict, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    import signal

    # A process started in the background by a non-interactive shell inherits SIGINT as ignored; the
    # app's Stop button (and Ctrl-C) must still interrupt a run so that it can be resumed.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = _parser()
    # overrides may come before or after options (`run case.yaml --profile smoke train.epochs=5`)
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return COMMANDS[args.command](args)
    except CaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        from surrogate.core.export import ExportMismatch
        from surrogate.core.training import NonFiniteLoss

        if isinstance(err, (NonFiniteLoss, ExportMismatch)):
            print(f"error: {err}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``kdlab`` command line: a thin layer over the runner, profiles and figures.

Every error is one line on stderr, ``kdlab: error: WHAT (WHAT TO DO)``, and a non-zero exit;
``kdlab --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kdlab.cli_errors import ErrorsInOneLine
from kdlab.spec import load_spec

EXPERIMENTS_DIR = Path("experiments")


_workers_option = click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
                               help="parallel sweep points (default: one per core)")  # fmt: skip


def _specs(paths: tuple[str, ...], engine: str | None = None, hosts: str | None = None) -> list:
    return [load_spec(p, engine=engine, hosts=hosts) for p in paths]


def _spec_files(experiments_dir: str) -> tuple[str, ...]:
    """The spec files of an experiments folder (an error naming the option if it is missing)."""
    if not Path(experiments_dir).is_dir():
        raise click.ClickException(f"--experiments-dir: no folder {experiments_dir!r}; give the experiments folder")
    return tuple(sorted(str(p) for p in Path(experiments_dir).glob("*.yaml")))


#: Subfolders of the experiments folder that hold specs too (``omb/`` holds OMB's workload files, not specs).
SPEC_SUBFOLDERS = ("sweeps", "testbed")


def _all_spec_files(experiments_dir: str) -> tuple[str, ...]:
    """The experiments folder's specs and those of its sweeps/ and testbed/ subfolders."""
    subs = [Path(experiments_dir) / d for d in SPEC_SUBFOLDERS]
    return _spec_files(experiments_dir) + tuple(f for d in subs if d.is_dir() for f in _spec_files(str(d)))


@click.group(cls=ErrorsInOneLine, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="kdlab")
@click.option("--debug", is_flag=True, help="on an error, show the traceback instead of one line")
def main(debug: bool) -> None:
    """kdlab: KafkaDirect and RDMA datapaths in simulation (kdsim) and on real verbs (kdreal).

    Start with `kdlab reproduce` (every main experiment, results and figures), `kdlab perftest
    write_bw -a` (a perftest-like run), or `kdlab profiles` (hardware profiles and their sources).
    """


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--engine", type=click.Choice(["sim", "real"]), help="override the spec's engine")
@_workers_option
@click.option("--results-dir", default="results", show_default=True, help="where Parquet parts are written")
@click.option("--figures-dir", default="paper_figures", show_default=True)
@click.option("--figures/--no-figures", default=True, show_default=True, help="draw the spec's figure")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
@click.option("--executor", default=None, help="dask://HOST:PORT to run the sweep on a Dask cluster (default: local)")
@click.option("--recompute", is_flag=True, help="ignore results already computed for these points")
@click.option("--yes", "-y", is_flag=True, help="run sweeps of more than 10,000 points to compute without asking")
@click.option("--hosts", default=None, help="engine real: run on these machines, 'testbed' or a hosts YAML file "
              "(hosts:, scheduler:, placement:; docs/real-cluster.md)")  # fmt: skip
def run(
    specs: tuple[str, ...],
    engine: str | None,
    workers: int | None,
    results_dir: str,
    figures_dir: str,
    figures: bool,
    quiet: bool,
    executor: str | None,
    recompute: bool,
    yes: bool,
    hosts: str | None,
) -> None:
    """Run experiment SPECS (YAML files): sweep, write results, draw figures.

    Points already in RESULTS_DIR (same resolved config, every profile value included, same
    seed and same code) are not computed again; a sweep that was interrupted resumes where it
    stopped. Sweeps of more than 10,000 points to compute need --yes.
    """
    from kdlab.runner import CONFIRM_POINTS, SweepFailed, run_experiment

    failed = False
    for spec in _specs(specs, engine, hosts):
        try:
            df = run_experiment(spec, workers=workers, results_dir=results_dir, progress=not quiet,
                                executor=executor, recompute=recompute, log=click.echo,
                                max_points=None if yes else CONFIRM_POINTS)  # fmt: skip
        except SweepFailed as err:
            click.echo(str(err), err=True)
            if click.get_current_context().find_root().params.get("debug"):
                for failure in err.failures:
                    click.echo(f"{failure.point.config()}:\n{failure.trace}", err=True)
            else:
                click.echo("  (kdlab --debug run ... shows each failed point's traceback)", err=True)
            df, failed = err.frame, True
        click.echo(f"{spec.name}: {len(df)} rows -> {results_dir}/{spec.name}/")
        if figures and spec.figure and len(df):
            from kdlab.figures import render

            for p in render(df, spec, figures_dir):
                click.echo(f"  figure {p}")
    if failed:
        sys.exit(1)


@main.command()
@_workers_option
@click.option("--results-dir", default="results", show_default=True)
@click.option("--figures-dir", default="paper_figures", show_default=True)
@click.option("--experiments-dir", default=str(EXPERIMENTS_DIR), show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
def reproduce(workers: int | None, results_dir: str, figures_dir: str, experiments_dir: str, quiet: bool) -> None:
    """Run every main experiment in simulation, draw the figures, check the anchors."""
    import time

    import pandas as pd

    from kdlab.anchors import check_references
    from kdlab.figures import render
    from kdlab.runner import run_experiment

    specs = [s for s in _specs(_spec_files(experiments_dir), "sim") if s.main]
    if not specs:
        raise click.ClickException(f"--experiments-dir: {experiments_dir!r} has no spec with main: true; nothing to do")
    checks = []
    timings = []
    for spec in specs:
        t0 = time.perf_counter()
        df = run_experiment(spec, workers=workers, results_dir=results_dir, progress=not quiet)
        render(df, spec, figures_dir)
        checks.append(check_references(df, spec))
        timings.append((spec.name, time.perf_counter() - t0))
        click.echo(f"{spec.name}: {len(df)} rows in {timings[-1][1]:.1f} s")
    table = pd.concat([c for c in checks if len(c)], ignore_index=True) if checks else pd.DataFrame()
    if len(table):
        click.echo("\nPublished values vs simulation:")
        click.echo(table.drop(columns=["experiment"]).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        Path(results_dir).mkdir(exist_ok=True)
        table.to_csv(Path(results_dir) / "anchors.csv", index=False)
    from kdlab.headline import headline, write_headline

    head = headline(results_dir)
    click.echo("\nKafkaDirect's claims vs the model (paper_figures/headline.md):")
    click.echo(head.drop(columns=["source"]).to_string(index=False))
    write_headline(head, results_dir, figures_dir)


@main.command()
@click.argument("specs", nargs=-1, required=True)
def validate(specs: tuple[str, ...]) -> None:
    """Check experiment SPECS without running them; print the number of points."""
    from kdlab.runner import CONFIRM_POINTS
    from kdlab.spec import grid_size

    for spec in _specs(specs):
        n = grid_size(spec)
        big = f"; more than {CONFIRM_POINTS:,}: `kdlab run` asks for --yes" if n > CONFIRM_POINTS else ""
        click.echo(f"{spec.name}: ok, {n:,} points ({spec.workload}, {spec.engine}, {spec.profile}){big}")


@main.command()
@click.argument("name", required=False)
def profiles(name: str | None) -> None:
    """List hardware profiles, or show one: every parameter with unit, tag and source."""
    from kdsim.profile import ProfileError, available_profiles, load_profile, param_info

    if name is None:
        for n in available_profiles():
            click.echo(f"{n:16s} {load_profile(n).description}")
        return
    try:
        prof = load_profile(name)
    except ProfileError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{prof.name}: {prof.description}\n")
    for key, value in prof.as_dict().items():
        src = prof.sources[key]
        click.echo(f"  {key:28s} {value:>10g} {param_info(key)['unit']:6s} [{src.tag}] {src.text}")
    if prof.fit:
        click.echo("\nfit:")
        for k, v in prof.fit.items():
            click.echo(f"  {k}: {v}")


@main.command()
@click.argument(
    "test",
    type=click.Choice(
        ["send_lat", "write_lat", "read_lat", "atomic_lat", "send_bw", "write_bw", "read_bw", "atomic_bw"]
    ),
)
@click.option("-s", "--size", type=click.IntRange(min=1), default=None, help="message size in bytes (perftest -s)")
@click.option("-a", "--all", "all_sizes", is_flag=True, help="sizes 2 B .. 8 MiB (perftest -a)")
@click.option("-n", "--iters", type=click.IntRange(min=5), default=1000, show_default=True, help="iterations per QP")
@click.option("-q", "--qp", "qps", type=click.IntRange(min=1), default=1, show_default=True, help="queue pairs")
@click.option("-t", "--tx-depth", type=int, default=None, help="outstanding WRs per QP (default 128 bw, 1 lat)")
@click.option("-Q", "--cq-mod", type=click.IntRange(min=1), default=None,
              help="one CQE per this many WRs (default as perftest: 100, or 1 above 8 KiB)")  # fmt: skip
@click.option("-l", "--post-list", type=int, default=1, show_default=True, help="WRs per doorbell")
@click.option("-I", "--inline-size", type=int, default=None, help="max inline bytes (default: device max for lat)")
@click.option("--profile", default="cx4-edr-100g", show_default=True, help="hardware profile (sim)")
@click.option("--engine", type=click.Choice(["sim", "real"]), default="sim", show_default=True)
def perftest(
    test: str,
    size: int | None,
    all_sizes: bool,
    iters: int,
    qps: int,
    tx_depth: int | None,
    cq_mod: int | None,
    post_list: int,
    inline_size: int | None,
    profile: str,
    engine: str,
) -> None:
    """Run a perftest-equivalent TEST and print perftest's table (ib_<TEST> in perftest)."""
    from pydantic import ValidationError

    from kdlab.perftest_report import BW_HEADER, LAT_HEADER, format_bw_row, format_latency_row
    from kdlab.spec import Point
    from kdlab.workloads.perftest import MAX_SIZE, PerftestParams, PerftestWorkload

    is_lat = test.endswith("_lat")
    default = 8 if test.startswith("atomic") else (2 if is_lat else 65536)
    sizes = [1 << i for i in range(1, 24) if (1 << i) <= MAX_SIZE] if all_sizes else [default if size is None else size]
    if engine == "sim":
        from kdsim.profile import load_profile

        load_profile(profile)  # an unknown profile fails here, before the table's header
    else:
        from kdlab.engines import require_engine

        require_engine(engine)
    runs = []
    for s in sizes:
        params = {"test": test, "size": s, "iterations": iters, "qps": qps, "cq_mod": cq_mod, "post_list": post_list,
                  "inline_size": inline_size, **({"tx_depth": tx_depth} if tx_depth is not None else {})}  # fmt: skip
        try:
            PerftestParams.model_validate(params)
        except ValidationError as err:
            from kdlab.spec import format_validation_error

            raise click.ClickException(format_validation_error(err, "perftest", PerftestParams)) from None
        runs.append(params)
    click.echo(f"# kdlab perftest {test} on {engine} ({profile if engine == 'sim' else 'device'}), {qps} QP(s)")
    click.echo(LAT_HEADER if is_lat else BW_HEADER)
    for params in runs:
        point = Point("cli-perftest", "perftest", engine, profile, (), tuple(sorted(params.items())), 0)
        row = PerftestWorkload().run_point(point)[0]
        msg = row["msg_bytes"]
        click.echo(format_latency_row(msg, iters, row) if is_lat else format_bw_row(msg, iters * qps, row))


@main.command()
@click.option("--results-dir", default="results", show_default=True)
@click.option("--figures-dir", default="paper_figures", show_default=True)
@click.option("--experiments-dir", default=str(EXPERIMENTS_DIR), show_default=True)
@click.option("--all-versions", is_flag=True, help="also draw rows computed by other code versions (measured runs)")
def figures(results_dir: str, figures_dir: str, experiments_dir: str, all_versions: bool) -> None:
    """Redraw every experiment's figure (sweeps/ and testbed/ too) from RESULTS_DIR's rows of the current code."""
    from kdlab.figures import render
    from kdlab.results import load_results, rows_of_spec

    for spec in _specs(_all_spec_files(experiments_dir)):
        if not spec.figure or not (Path(results_dir) / spec.name).is_dir():
            continue
        got = load_results(results_dir, spec.name, all_versions=all_versions)
        frame = rows_of_spec(got.frame, spec)
        if len(frame) < len(got.frame):
            click.echo(f"{spec.name}: left out {len(got.frame) - len(frame)} row(s) of points the spec no longer has",
                       err=True)  # fmt: skip
        if not len(frame):
            click.echo(f"{spec.name}: no rows of the current code and spec ({got.other_versions} of other versions: "
                       "--all-versions draws them)", err=True)  # fmt: skip
            continue
        for p in render(frame, spec, figures_dir):
            click.echo(str(p))


@main.command()
@click.argument("workload", type=click.Path(exists=True, dir_okay=False))
@click.option("--driver", type=click.Path(exists=True, dir_okay=False), help="OMB Kafka driver (driver-kafka/*.yaml)")
@click.option("--system", type=click.Choice(["kafka", "osu", "kafkadirect"]), default="kafkadirect", show_default=True)
@click.option("--profile", default="cx4-edr-100g", show_default=True)
@click.option("--brokers", type=click.IntRange(min=1), help="brokers in the cluster (default: the replication factor)")
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=1.0,
    show_default=True,
    help="shrink warm-up, test and OMB's 10 s period alike (0.001: 15 min -> 0.9 s simulated)",
)
@click.option("--out", type=click.Path(dir_okay=False), help="write OMB's result JSON here")
def omb(
    workload: str,
    driver: str | None,
    system: str,
    profile: str,
    brokers: int | None,
    time_scale: float,
    out: str | None,
) -> None:
    """Simulate an OpenMessaging Benchmark WORKLOAD (YAML) with a DRIVER file; print (or write) OMB's result JSON."""
    import json

    from kdlab.kafka.omb import OmbError
    from kdlab.kafka.omb_run import run_omb

    extra = {"brokers": brokers} if brokers else {}
    try:
        result = run_omb(workload, system, profile, out, driver=driver, time_scale=time_scale, **extra)
    except (OmbError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    periods = len(result["publishRate"]) or 1
    shown = {
        "periods": len(result["publishRate"]),
        "publishRateMean": sum(result["publishRate"]) / periods,
        "consumeRateMean": sum(result["consumeRate"]) / periods,
        "backlogMax": max(result["backlog"], default=0),
    }
    keys = ("aggregatedPublishLatency50pct", "aggregatedPublishLatency99pct", "aggregatedPublishDelayLatency99pct",
            "aggregatedEndToEndLatency50pct", "aggregatedEndToEndLatency99pct", "kdlab")  # fmt: skip
    click.echo(json.dumps(shown | {k: result.get(k) for k in keys}, indent=1))
    if out:
        click.echo(f"wrote {out}")


@main.command()
@click.argument("sql")
@click.option("--results-dir", default="results", show_default=True)
@click.option("--all-versions", is_flag=True, help="include points computed by other code versions")
def query(sql: str, results_dir: str, all_versions: bool) -> None:
    """Run SQL (DuckDB) over the result tables: one view per experiment, one row per point.

    Each experiment is a view named after it with '-' and '.' as '_' (kafka-produce ->
    kafka_produce), holding the newest computation of each point by the current code; the
    rows left out are counted on stderr. Example:

        kdlab query "select variant, record_bytes, produce_mb_per_s from kafka_produce order by 2"
    """
    from kdlab.results_views import connect

    con, left_out = connect(results_dir, all_versions=all_versions)
    try:
        frame = con.sql(sql).df()
    except Exception as err:  # duckdb.Error: a bad query; one line names it
        raise click.ClickException(f"SQL: {str(err).splitlines()[0]}") from None
    click.echo(frame.to_string(index=False))
    if left_out:
        click.echo(left_out, err=True)


@main.group()
def results() -> None:
    """Look after a results folder: `kdlab results check [--repair]`."""


@results.command("check")
@click.option("--results-dir", default="results", show_default=True)
@click.option("--repair", is_flag=True, help="move bad parts to <experiment>/_quarantine/, delete leftover temp files")
def results_check(results_dir: str, repair: bool) -> None:
    """Find unreadable or foreign result parts and temp files of killed runs; exit 1 if any remain."""
    from kdlab.results_check import check_results

    findings = check_results(results_dir, repair=repair)
    for finding in findings:
        click.echo(str(finding))
    if not findings:
        click.echo(f"{results_dir}: every part is readable and belongs to its experiment")
    elif not repair:
        click.echo(f"{len(findings)} problem(s); `kdlab results check --repair` moves them aside", err=True)
        sys.exit(1)


from kdlab.cli_cluster import cluster, testbed  # noqa: E402  (commands defined there)
from kdlab.cli_fit import calibrate, calibrate_anchor, calibrate_kafka  # noqa: E402

for _command in (calibrate, calibrate_anchor, calibrate_kafka, cluster, testbed):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()

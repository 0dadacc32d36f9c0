"""``kdlab calibrate``, ``calibrate-anchor`` and ``calibrate-kafka``: fit profiles to measurements."""

from __future__ import annotations

from pathlib import Path

import click

from kdlab.spec import load_spec


def _specs(paths: tuple[str, ...]) -> list:
    return [load_spec(p) for p in paths]


@click.command("calibrate-anchor")
@click.argument("profile")
def calibrate_anchor(profile: str) -> None:
    """Fit the profile's fitted parameter to its anchor measurement and print the result."""
    from kdsim.calibrate import fit_anchor
    from kdsim.profile import available_profiles, load_profile

    fitted = [n for n in available_profiles() if {"parameter", "anchor"} <= set(load_profile(n).fit)]
    if profile not in fitted:
        load_profile(profile)  # an unknown profile says so
        raise click.ClickException(f"profile {profile!r} has no anchor to fit (fit.parameter and fit.anchor); "
                                   f"profiles with one: {', '.join(fitted)}")  # fmt: skip
    result = fit_anchor(profile)
    for k, v in result.items():
        click.echo(f"{k}: {v}")


@click.command("calibrate-kafka")
@click.argument("specs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--base", default="kdreal-rxe-tcg", show_default=True, help="profile to calibrate (others kept)")
@click.option("--fit", "params", multiple=True, required=True, help="profile parameter to fit (repeatable)")
@click.option(
    "--fit-on",
    "fit_on",
    default="ends",
    show_default=True,
    help='"ends" (the first and last point of each swept series) or a pandas query over the parameters and '
    "experiment; the other points are held out and predicted",
)
@click.option("--results", "results_dir", default="results", show_default=True, type=click.Path(file_okay=False))
@click.option("--name", default=None, help="name of the calibrated profile (default: BASE-fit)")
@click.option("--out", type=click.Path(dir_okay=False), help="write the calibrated profile YAML here")
@click.option("--table", type=click.Path(dir_okay=False), help="write the point-by-point table here (CSV)")
@click.option("--figure", type=click.Path(dir_okay=False), help="write the overlay figure (PATH.png, PATH.pdf)")
def calibrate_kafka(
    specs: tuple[str, ...], base: str, params: tuple[str, ...], fit_on: str, results_dir: str, name: str | None,
    out: str | None, table: str | None, figure: str | None,
) -> None:  # fmt: skip
    """Fit kdsim to measured Kafka sweeps (SPECS run with --engine real) and print each point's error.

    Every measured row of each spec's experiment gives one point per metric of the spec's figure (a
    throughput and a p50 latency). Points matching --fit-on are fitted; all others are held out and
    predicted with the calibrated profile.
    """
    import pandas as pd

    from kdlab.results import read_results
    from kdsim import fit_kafka
    from kdsim.profile import ProfileError, param_info

    loaded = _specs(specs)
    metrics: dict[str, list[str]] = {}
    frames = []
    for spec in loaded:
        fig = spec.figure
        if fig is not None and not isinstance(fig, str):
            metrics[spec.name] = list(fig.y)
        frames.append(read_results(results_dir, spec.name, all_versions=True))  # measured runs are data
    for p in params:
        param_info(p)  # an unknown parameter is named before any work
    if not any(len(f) for f in frames):
        names = ", ".join(s.name for s in loaded)
        raise click.ClickException(f"no rows of {names} in {results_dir!r}; measure them first "
                                   "(kdlab run --engine real SPEC, in the testbed)")  # fmt: skip
    try:
        measured = fit_kafka.measurements(pd.concat(frames), metrics)
        chosen = fit_kafka.select(measured, fit_on)
        result = fit_kafka.fit(base, measured, list(params), chosen, name or f"{base}-fit")
    except (ValueError, ProfileError) as err:
        raise click.ClickException(str(err)) from None
    for p, v in result.values.items():
        click.echo(f"fitted {p} = {v:.6g}")
    frame = pd.DataFrame(result.table)
    with pd.option_context("display.max_colwidth", 70, "display.width", 200):
        click.echo(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    held = frame[frame["role"] == "held out"]["error_pct"].abs()
    click.echo(f"held out: {len(held)} values, max |error| {held.max():.1f}%, median {held.median():.1f}%, "
               f"{(held <= 25).mean() * 100:.0f}% within 25%")  # fmt: skip
    if table:
        frame.to_csv(table, index=False)
        click.echo(f"wrote {table}")
    if out:
        from kdsim.fit import profile_yaml

        Path(out).write_text(profile_yaml(result, ", ".join(s.name for s in loaded)))
        click.echo(f"wrote {out}")
    if figure:
        for p in fit_kafka.overlay_figure(result, measured, base, figure):
            click.echo(f"wrote {p}")


@click.command()
@click.argument("measured", type=click.Path(exists=True, dir_okay=False))
@click.option("--base", default="cx4-edr-100g", show_default=True, help="profile whose other numbers are kept")
@click.option("--fit", "params", multiple=True, required=True, help="profile parameter to fit (repeatable)")
@click.option("--fit-on", "fit_on", multiple=True, required=True, help='point to fit on, e.g. "write_lat 2 B"')
@click.option("--name", required=True, help="name of the calibrated profile")
@click.option("--out", type=click.Path(dir_okay=False), help="write the profile YAML here")
@click.option("--figure", type=click.Path(dir_okay=False), help="write an overlay figure (PATH.png, PATH.pdf)")
def calibrate(
    measured: str,
    base: str,
    params: tuple[str, ...],
    fit_on: tuple[str, ...],
    name: str,
    out: str | None,
    figure: str | None,
) -> None:
    """Fit a kdsim profile to MEASURED perftest points (CSV or Parquet) and print every point's error.

    MEASURED has columns test, size, optional qps, and t_typical_us (latency tests) or bw_avg_gbps
    (bandwidth tests). Points not named by --fit-on are held out and predicted.
    """
    import pandas as pd

    from kdsim.fit import Measurement, fit_profile, profile_yaml
    from kdsim.profile import ProfileError, load_profile

    df = pd.read_parquet(measured) if measured.endswith(".parquet") else pd.read_csv(measured)
    points = []
    for row in df.to_dict("records"):
        metric = "t_typical_us" if str(row["test"]).endswith("_lat") else "bw_avg_gbps"
        points.append(Measurement(str(row["test"]), int(row["size"]), float(row[metric]), int(row.get("qps", 1) or 1)))
    try:
        result = fit_profile(load_profile(base), points, list(params), list(fit_on), name)
    except (ValueError, ProfileError) as err:
        raise click.ClickException(str(err)) from None
    for p, v in result.values.items():
        click.echo(f"fitted {p} = {v:.6g}")
    click.echo(pd.DataFrame(result.table).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    click.echo(f"held-out max |error|: {result.held_out_max_error():.1f}%")
    if out:
        Path(out).write_text(profile_yaml(result, Path(measured).name))
        click.echo(f"wrote {out}")
    if figure:
        from kdsim.fit import overlay_figure

        for p in overlay_figure(result, points, figure):
            click.echo(f"wrote {p}")

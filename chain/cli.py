"""The command line: parse, call the engine, turn errors into one message and an exit code."""

from __future__ import annotations

import errno
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from chain import __version__
from chain.errors import ChainError

log = logging.getLogger("chain.cli")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit, `kill`): stop like Ctrl-C, with the same message."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _disk_full(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _guard(verbose: int, fn: Callable[[], Any]) -> Any:
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        return fn()
    except ChainError as exc:
        if verbose > 0:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        what = "stopped (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        click.echo(f"\n{what}: finished steps and tiles are kept; run the same command again to resume", err=True)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    except Exception as exc:
        if not _disk_full(exc):
            raise
        if verbose > 0:
            traceback.print_exc()
        where = getattr(exc, "filename", None)
        click.echo(f"error: the disk is full{f' (writing {where})' if where else ''}; free some space (df -h) and run the same "
                   "command again: finished steps and tiles are kept, the step that was writing starts over", err=True)
        sys.exit(5)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


verbose_opt = click.option("-v", "--verbose", count=True, help="More detail (-v: debug log and tracebacks).")
quiet_opt = click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
from_opt = click.option("--from", "from_step", metavar="STEP", help="Re-run from this step on (earlier steps must be up to date).")
dry_run_opt = click.option("--dry-run", is_flag=True, help="Only say which steps would run, and why.")
set_opt = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                       help="Override a config key, e.g. --set model.n_estimators=200 (repeatable).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chain")
def main() -> None:
    """chain: land-cover maps from satellite time series and reference polygons."""


def _setup(verbose: int, quiet: bool) -> None:
    from chain.log import configure

    configure(-1 if quiet else verbose)


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@from_opt
@click.option("--to", "to_step", metavar="STEP", help="Stop after this step.")
@click.option("--force", is_flag=True, help="Re-run every selected step even if up to date.")
@dry_run_opt
@set_opt
@verbose_opt
@quiet_opt
def run(config: Path, from_step: str | None, to_step: str | None, force: bool, dry_run: bool,
        overrides: tuple[str, ...], verbose: int, quiet: bool) -> None:
    """Run the chain described by CONFIG (resumes where a previous run stopped)."""
    _setup(verbose, quiet)

    def go() -> None:
        from chain import config as cfgmod
        from chain.runner import run_pipeline

        cfg = cfgmod.load(config, list(overrides))
        _demo(cfg)
        cfg = _previous_first(cfg, config, list(overrides), dry_run)
        reports = run_pipeline(cfg, from_step, to_step, force, dry_run)
        _print_summary(reports, cfg.workdir, dry_run)

    _guard(verbose, go)


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--previous", type=click.Path(path_type=Path), metavar="WORKDIR",
              help="Last year's work folder (a finished run); default: update.previous of CONFIG.")
@from_opt
@click.option("--force", is_flag=True, help="Re-run every step of this year's run even if up to date.")
@dry_run_opt
@set_opt
@verbose_opt
@quiet_opt
def update(config: Path, previous: Path | None, from_step: str | None, force: bool, dry_run: bool, overrides: tuple[str, ...],
           verbose: int, quiet: bool) -> None:
    """This year's map as an update of last year's run: its reference carried over where the land cover has not
    changed, its networks fine-tuned, and what changed reported (final/update.html). Last year's folder is only read."""
    _setup(verbose, quiet)

    def go() -> None:
        from chain import config as cfgmod
        from chain.runner import run_pipeline

        extra = [f"update.previous={previous.resolve()}"] if previous is not None else []
        cfg = cfgmod.load(config, [*overrides, *extra])
        if cfg.update is None:
            cfg = cfgmod.load(config, [*overrides, "update={}", *extra])
        _demo(cfg)
        cfg = _previous_first(cfg, config, [*overrides, *extra], dry_run)
        reports = run_pipeline(cfg, from_step, None, force, dry_run)
        _print_summary(reports, cfg.workdir, dry_run)
        if not dry_run and cfg.workdir.joinpath("final", "update.html").exists():
            click.echo(f"update report: {cfg.workdir / 'final' / 'update.html'}; flagged polygons: "
                       f"{cfg.workdir / 'final' / 'reference_flagged.gpkg'}")

    _guard(verbose, go)


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@set_opt
@verbose_opt
def plan(config: Path, overrides: tuple[str, ...], verbose: int) -> None:
    """Say which steps a run would execute, and why (nothing is run)."""
    _setup(verbose, False)

    def go() -> None:
        from chain import config as cfgmod
        from chain.runner import run_pipeline

        cfg = cfgmod.load(config, list(overrides))
        _demo(cfg)
        _print_summary(run_pipeline(cfg, dry_run=True), cfg.workdir, True)

    _guard(verbose, go)


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@set_opt
@verbose_opt
def validate(config: Path, overrides: tuple[str, ...], verbose: int) -> None:
    """Check CONFIG and every input it names, without running anything."""
    _setup(verbose, False)

    def go() -> None:
        from chain import config as cfgmod
        from chain.products import preflight
        from chain.runner import check

        cfg = cfgmod.load(config, list(overrides))
        _demo(cfg)
        ctx = check(cfg)
        cat, polys = preflight(ctx)
        g = cat.grid
        click.echo(f"config OK: {config}")
        click.echo(f"  grid: {g.width} x {g.height} px of {g.res[0]:g} m, {g.crs.to_string()}")
        for s in cat.sources:
            click.echo(f"  {s.title}: {s.summary()}")
        if cat.aoi_wkt:
            click.echo(f"  area of interest: {cfg.grid.aoi}")
        click.echo(f"  model: {cfg.model.type}" + (f" (+ {len(cfg.compare_models)} to compare)" if cfg.compare_models else ""))
        click.echo(f"  reference: {len(polys)} polygons, {polys['code'].nunique()} classes")

    _guard(verbose, go)


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--size", "size_px", default=500, show_default=True, help="Scene width and height in pixels (10 m).")
@click.option("--dates", "n_dates", default=24, show_default=True, help="Number of acquisition dates.")
@click.option("--fields", "n_fields", default=250, show_default=True, help="Number of fields.")
@click.option("--seed", default=0, show_default=True)
@verbose_opt
def demo(out: Path, size_px: int, n_dates: int, n_fields: int, seed: int, verbose: int) -> None:
    """Write the synthetic demo scene (S2-like series, masks, reference polygons, truth) to OUT."""
    _setup(verbose, False)
    from chain.demo import generate

    _guard(verbose, lambda: generate(out, size_px, n_dates, n_fields, seed))
    click.echo(f"demo scene written to {out}")


@main.command()
@click.argument("map_a", type=click.Path(path_type=Path))
@click.argument("map_b", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Output folder (default: change_<A>_<B> beside A).")
@verbose_opt
def compare(map_a: Path, map_b: Path, out_dir: Path | None, verbose: int) -> None:
    """Change between two class maps (e.g. two years): change matrix CSV + HTML heatmap + change raster."""
    _setup(verbose, False)

    def go() -> None:
        from chain.compare import compare_maps, default_out_dir

        out = out_dir or default_out_dir(map_a, map_b)
        res: dict[str, Any] = compare_maps(map_a, map_b, out)
        click.echo(f"{res['changed']:,} of {res['pixels']:,} pixels changed ({100 * res['changed'] / max(res['pixels'], 1):.1f} %)")
        click.echo(f"change matrix, change.tif and change.html in {out}")

    _guard(verbose, go)


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@set_opt
@verbose_opt
def verify(config: Path, overrides: tuple[str, ...], verbose: int) -> None:
    """List the outputs of finished steps that are missing or damaged since they were written (runs nothing)."""
    _setup(verbose, False)

    def go() -> None:
        from chain import config as cfgmod
        from chain.runner import Context, damaged_outputs, read_record, step_class, step_names

        cfg = cfgmod.load(config, list(overrides))
        ctx = Context(cfg, cfg.workdir)
        bad = 0
        for name in step_names():
            rec = read_record(cfg.workdir, name)
            step = step_class(name)()
            if rec is None:
                state = "never run"
            elif rec.get("status") != "done":
                state = "interrupted (chain run resumes it)"
            else:
                missing = [p for p in step.outputs(ctx) if not p.exists()]
                damaged = [p for p in damaged_outputs(ctx, rec) if p not in missing]
                bad += len(missing) + len(damaged)
                state = "ok" if not (missing or damaged) else "; ".join(
                    [f"missing {p}" for p in missing[:3]] + [f"damaged {p}" for p in damaged[:3]]
                    + ([f"... {len(missing) + len(damaged) - 6} more"] if len(missing) + len(damaged) > 6 else []))
            click.echo(f"  {name:<15} {state}")
        if bad:
            click.echo(f"\n{bad} output(s) missing or damaged: `chain run {config}` recomputes them (and what depends on them)")
            sys.exit(1)
        click.echo("\nevery output of the finished steps is as it was written")

    _guard(verbose, go)


@main.command(name="steps")
def list_steps() -> None:
    """List the steps in pipeline order."""
    from chain.runner import step_class, step_names

    for name in step_names():
        doc = (sys.modules[step_class(name).__module__].__doc__ or "").strip().splitlines()[0]
        click.echo(f"{name:<15} {doc.split(':', 1)[-1].strip()}")


def _previous_first(cfg: Any, config: Path, overrides: list[str], dry_run: bool) -> Any:
    """An update whose config names last year's (``update.previous_config``): that run brought up to date first
    (nothing runs when it is finished); returns the config with ``update.previous`` set to its work folder."""
    up = cfg.update
    if up is None or up.previous_config is None:
        return cfg
    from chain import config as cfgmod
    from chain.runner import run_pipeline

    prev_cfg = cfgmod.load(up.previous_config)
    if up.previous is not None and prev_cfg.workdir.resolve() != up.previous.resolve():
        from chain.errors import ConfigError

        raise ConfigError(f"update.previous_config {str(up.previous_config)!r} writes to {str(prev_cfg.workdir)!r}, "
                          f"not to update.previous {str(up.previous)!r}: make them the same folder")
    _demo(prev_cfg)
    click.echo(f"last year's run ({up.previous_config}):")
    _print_summary(run_pipeline(prev_cfg, dry_run=dry_run), prev_cfg.workdir, dry_run)
    click.echo("\nthis year's update:")
    return cfg if up.previous is not None else cfgmod.load(config, [*overrides, f"update.previous={prev_cfg.workdir}"])


def _demo(cfg: Any) -> None:
    """Write the demo scene at the config's input paths when the config asks for it (``demo:``) and it is missing."""
    if cfg.demo is not None:
        from chain.demo import ensure

        ensure(cfg.inputs.reference.path, **cfg.demo.model_dump())


def _print_summary(reports: list[Any], workdir: Path, dry_run: bool) -> None:
    click.echo("")
    for r in reports:
        extra = (f"{r.seconds:6.1f} s" if r.seconds >= 0.1 else "  < 0.1 s") if r.action == "ran" else ""
        why = f"  ({r.reason})" if r.reason else ""
        click.echo(f"  {r.step:<15} {r.action:<11} {extra}{why}")
    if not dry_run:
        final = workdir / "final"
        if (final / "RESULTS.txt").exists():
            import json

            m = json.loads((final / "metrics.json").read_text())["summary"]
            click.echo(f"\nmaps and report in {final}  (OA {m['oa']['mean']:.3f}, kappa {m['kappa']['mean']:.3f})")
        else:
            click.echo(f"\noutputs in {workdir}")


if __name__ == "__main__":
    main()

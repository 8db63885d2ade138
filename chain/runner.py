"""The step engine: declared outputs, a ledger of what ran with which parameters, reasons to re-run.

A step is up to date when its ledger record is complete and its signature (step version, its typed
parameters, fingerprints of external inputs, signatures of the steps it depends on) is unchanged
and its declared outputs exist. A changed parameter therefore re-runs that step and every step
downstream of it, and nothing else. A step interrupted mid-way keeps the tiles it finished (each
written atomically) and resumes from there when re-run with the same signature.

Steps are plug-ins (entry-point group ``chain.steps``), ordered by what they require; the engine
knows nothing of what they do.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from chain.atomic import clean_temporaries, write_json, write_text
from chain.config import Config, stable_hash
from chain.errors import ChainError, Problems, StateError, StepError
from chain.params import NoParams, StepParams
from chain.paths import Paths

log = logging.getLogger(__name__)


class Step:
    """A processing step. Subclasses set ``name``/``requires``/``version``/``Params`` and implement the hooks."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()  # steps whose outputs this one reads (their changes re-run it)
    after: ClassVar[tuple[str, ...]] = ()  # steps to run before this one when present, without depending on them
    version: ClassVar[str] = "1"
    Params: ClassVar[type[StepParams]] = NoParams  # the config values that change this step's outputs
    more_params: ClassVar[tuple[type[StepParams], ...]] = ()  # Params that ``params`` picks instead when a config asks

    def upstream(self, ctx: Context) -> tuple[str, ...]:
        """The steps whose signatures are part of this one's: ``requires``, plus those a config switches on."""
        return self.requires

    def enabled(self, ctx: Context) -> bool:
        """False for an optional step switched off in the config (it records its signature and writes nothing)."""
        return True

    def check(self, ctx: Context) -> None:  # noqa: B027 - an optional hook
        """Cheap checks of config and inputs, run for every step before the first one starts."""

    def params(self, ctx: Context) -> StepParams:
        return self.Params.of(ctx.cfg)

    def external_inputs(self, ctx: Context) -> list[str]:
        """Files made outside the chain that this step reads (fingerprinted by size and mtime)."""
        return []

    def outputs(self, ctx: Context) -> list[Path]:
        raise NotImplementedError

    def run(self, ctx: Context) -> None:
        raise NotImplementedError


def step_names() -> list[str]:
    """The registered steps in pipeline order: each after those it requires or runs after, ties by name."""
    from chain.plugins import STEPS

    declared = sorted(STEPS.names())
    before = {n: set(step_class(n).requires) for n in declared}
    for n, reqs in before.items():
        unknown = sorted(r for r in reqs if r not in before)
        if unknown:
            raise StateError(f"step {n!r} requires {unknown}, which are not registered")
    for n in declared:
        before[n] |= {a for a in step_class(n).after if a in before}
    order: list[str] = []
    while len(order) < len(declared):
        ready = [n for n in declared if n not in order and before[n] <= set(order)]
        if not ready:
            raise StateError(f"the steps {sorted(set(declared) - set(order))} require each other in a cycle")
        order.append(ready[0])
    return order


def step_class(name: str) -> type[Step]:
    from chain.plugins import STEPS

    cls: type[Step] = STEPS.get(name, "step")
    return cls


@dataclass
class Context:
    cfg: Config
    workdir: Path
    signatures: dict[str, str] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    _client: Any = None

    @property
    def paths(self) -> Paths:
        return Paths(self.workdir)

    def dir(self, step: str) -> Path:
        return self.paths.step(step)

    def client(self) -> Any:
        if self._client is None:
            from chain.cluster import open_client

            self._client = open_client(self.cfg.cluster, self.workdir)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            cluster = self._client.cluster
            self._client.close()
            if cluster is not None:
                cluster.close()
            self._client = None

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]


# ---- ledger -------------------------------------------------------------------------------------

def ledger_path(workdir: Path, step: str) -> Path:
    return workdir / ".chain" / "ledger" / f"{step}.json"


def read_record(workdir: Path, step: str) -> dict[str, Any] | None:
    p = ledger_path(workdir, step)
    try:
        return json.loads(p.read_text()) if p.exists() else None
    except json.JSONDecodeError:
        return None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


@dataclass
class Decision:
    step: str
    signature: str
    reason: str | None  # None: up to date
    record: dict[str, Any] | None
    payload: dict[str, Any]
    damaged: list[Path] = field(default_factory=list)  # outputs whose size or checksum changed since the step wrote them


# ---- verified outputs: size and a cheap checksum of every file a step declared ---------------------

_WHOLE = 64 * 2**20  # files up to this size are checksummed whole; larger ones by their first and last 4 MiB


def checksum(path: Path) -> list[int]:
    """[size, mtime_ns, CRC-32]: enough to notice a truncated, emptied or rewritten file."""
    import zlib

    st = path.stat()
    size = st.st_size
    crc = 0
    with open(path, "rb") as fh:
        if size <= _WHOLE:
            for chunk in iter(lambda: fh.read(2**20), b""):
                crc = zlib.crc32(chunk, crc)
        else:
            crc = zlib.crc32(fh.read(4 * 2**20), crc)
            fh.seek(size - 4 * 2**20)
            crc = zlib.crc32(fh.read(), crc)
    return [size, st.st_mtime_ns, crc]


def _files(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and ".tmp-" not in f.name)
        elif p.exists():
            out.append(p)
    return out


def snapshot(ctx: Context, paths: list[Path]) -> dict[str, list[int]]:
    return {str(f.relative_to(ctx.workdir)): checksum(f) for f in _files(paths)}


def damaged_outputs(ctx: Context, record: dict[str, Any]) -> list[Path]:
    """The files a finished step wrote that are now missing, truncated or changed (by their recorded checksum)."""
    bad = []
    for rel, (size, mtime, crc) in (record.get("outputs") or {}).items():
        f = ctx.workdir / rel
        if not f.exists():
            bad.append(f)
            continue
        st = f.stat()
        # same size and modification time: untouched (a stat, no read); otherwise the checksum decides
        if st.st_size != size or (st.st_mtime_ns != mtime and checksum(f)[2] != crc):
            bad.append(f)
    return bad


def decide(step: Step, ctx: Context, forced: bool) -> Decision:
    from chain.fingerprint import fingerprint_files

    params = step.params(ctx).model_dump(mode="json")
    inputs_hash = stable_hash(fingerprint_files(step.external_inputs(ctx)))
    upstream = {r: ctx.signatures[r] for r in step.upstream(ctx)}
    payload = {"step": step.name, "version": step.version, "params": params, "inputs": inputs_hash, "upstream": upstream}
    sig = stable_hash(payload)
    ctx.signatures[step.name] = sig
    rec = read_record(ctx.workdir, step.name)

    def because() -> str | None:
        if forced:
            return "forced"
        if rec is None:
            return "never run"
        if rec.get("signature") != sig:
            if rec.get("version") != step.version:
                return f"step code changed (version {rec.get('version')} -> {step.version})"
            old, new = _flatten(rec.get("params", {})), _flatten(params)
            changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            if changed:
                shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
                return f"parameters changed ({shown}{', ...' if len(changed) > 4 else ''})"
            if old.keys() != new.keys():
                return f"configuration keys added or removed ({', '.join(sorted(old.keys() ^ new.keys())[:4])})"
            if rec.get("inputs") != inputs_hash:
                return "input files changed"
            ups = [r for r in upstream if rec.get("upstream", {}).get(r) != upstream[r]]
            return f"upstream step(s) {ups} changed" if ups else "signature changed"
        if rec.get("status") != "done":
            return "interrupted, resuming"
        missing = [p for p in step.outputs(ctx) if not p.exists()]
        if missing:
            return f"output missing: {missing[0]}"
        if damaged:
            more = f" and {len(damaged) - 1} more" if len(damaged) > 1 else ""
            return f"output damaged (size or checksum changed since it was written): {damaged[0]}{more}"
        return None

    done = rec is not None and rec.get("signature") == sig and rec.get("status") == "done"
    damaged = damaged_outputs(ctx, rec) if done and rec is not None else []
    return Decision(step.name, sig, because(), rec, payload, damaged)


def _clear_outputs(step: Step, ctx: Context) -> None:
    for p in step.outputs(ctx):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    d = ctx.dir(step.name)
    if d.exists():
        shutil.rmtree(d)


# ---- the run ------------------------------------------------------------------------------------

@dataclass
class StepReport:
    step: str
    action: str  # ran | skipped | would run | up to date | off
    reason: str | None
    seconds: float = 0.0


def check_workdir(workdir: Path) -> None:
    """The work folder can be created and written, before anything runs (``chain validate`` too)."""
    from chain.errors import ConfigError

    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"workdir {str(workdir)!r} is a file, not a folder; give a folder path (it is created if missing)")
    probe = workdir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"workdir {str(workdir)!r} cannot be created: {str(probe)!r} is a file; give a folder path")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == workdir else f"cannot be created: {str(probe)!r} is not writable"
        raise ConfigError(f"workdir {str(workdir)!r} {what} by this user; choose a folder you can write, or fix its permissions")
    lock = workdir / ".chain" / "lock"
    if lock.exists() and not lock.is_file():
        raise StateError(f"{str(lock)!r} should be a lock file but is a folder (created by hand?); remove it: rm -r {str(lock)!r}")


class WorkdirLock:
    """One run per work folder at a time (an advisory lock released even if the process is killed).
    The holder writes its PID into the lock file, so a refused run can name it."""

    def __init__(self, workdir: Path):
        self.path = workdir / ".chain" / "lock"
        self.fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip()
            os.close(self.fd)
            who = f" (process {holder}, on this machine)" if holder.isdigit() else ""
            raise StateError(f"work folder {str(self.path.parent.parent)!r} is in use by another chain run{who}; "
                             "wait for it to finish or stop it, then run again") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def prepare(ctx: Context, upto: int | None = None) -> None:
    """Run every step's cheap checks (config and inputs), in pipeline order, before the first step starts;
    every problem found is reported at once."""
    from chain.errors import ChainError, Problems

    names = step_names()
    problems: list[ChainError] = []
    for name in names[: (upto + 1) if upto is not None else None]:
        try:
            step_class(name)().check(ctx)
        except Problems as exc:
            problems += exc.problems
        except ChainError as exc:
            problems.append(exc)
    Problems.collect(problems)


def check(cfg: Config) -> Context:
    """Validate config and inputs without running anything (``chain validate``)."""
    ctx = Context(cfg, cfg.workdir)
    problems: list[ChainError] = []
    try:
        check_workdir(cfg.workdir)
    except ChainError as exc:
        problems.append(exc)
    try:
        prepare(ctx)
    except Problems as exc:
        problems += exc.problems
    except ChainError as exc:
        problems.append(exc)
    Problems.collect(problems)
    return ctx


def main_gdal_cache(cfg: Config) -> Any:
    """GDAL's block cache in this process bounded like the workers' (``cluster.gdal_cache_mb``), unless the user set
    GDAL_CACHEMAX: GDAL's default is 5 % of the RAM, and a check's decimated read of a whole scene (e.g. the stack's
    gap warning) fills it with every block of the file, so this process's memory grew with the scene."""
    import rasterio

    if "GDAL_CACHEMAX" in os.environ:
        return contextlib.nullcontext()
    return rasterio.Env(GDAL_CACHEMAX=cfg.cluster.gdal_cache_mb * 1024 * 1024)


def run_pipeline(
    cfg: Config,
    from_step: str | None = None,
    to_step: str | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> list[StepReport]:
    """Run (or, with ``dry_run``, plan) the steps in order; returns what happened to each."""
    names = step_names()
    for label, value in (("--from", from_step), ("--to", to_step)):
        if value is not None and value not in names:
            raise StateError(f"{label} {value!r} is not a step; steps are: {', '.join(names)}")
    i_from = names.index(from_step) if from_step else 0
    i_to = names.index(to_step) if to_step else len(names) - 1
    if i_from > i_to:
        raise StateError(f"--from {from_step} comes after --to {to_step}")

    workdir = cfg.workdir
    ctx = Context(cfg, workdir)
    reports: list[StepReport] = []
    check_workdir(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with WorkdirLock(workdir), main_gdal_cache(cfg):
        if not dry_run:
            removed = clean_temporaries(workdir)
            if removed:
                log.info("removed %d temporary file(s) left by an interrupted run", removed)
            from chain.log import add_logfile

            handler = add_logfile(workdir / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log")
            record_config(workdir, cfg)
        try:
            prepare(ctx, i_to)
            for i, name in enumerate(names):
                if i > i_to:
                    break
                step = step_class(name)()
                forced = i >= i_from and (force or from_step is not None)
                d = decide(step, ctx, forced)
                if i < i_from:
                    if d.reason is not None:
                        raise StateError(f"--from {from_step}: step {name!r} before it is not up to date ({d.reason}); run without --from first")
                    continue
                if d.reason is None:
                    off = not step.enabled(ctx)
                    reports.append(StepReport(name, "off" if off else "up to date" if dry_run else "skipped", None))
                    if not dry_run:  # chain plan prints its table, not the same lines twice
                        log.info("%-14s %s", name, "off" if off else "up to date")
                    continue
                if dry_run:
                    on = step.enabled(ctx)
                    reports.append(StepReport(name, "would run" if on else "off", d.reason if on else None))
                    continue
                mark_stale(workdir, name, d.reason)
                reports.append(_run_step(step, ctx, d))
            if not dry_run and i_to == len(names) - 1:
                (workdir / "final" / STALE_NOTE).unlink(missing_ok=True)  # every step is up to date: final/ is this config's
        finally:
            ctx.close()
            if not dry_run:
                logging.getLogger("chain").removeHandler(handler)
                handler.close()
    return reports


def config_record(workdir: Path) -> Path:
    """The resolved config of the last run in ``workdir`` (paths absolute)."""
    return workdir / ".chain" / "config.json"


def record_config(workdir: Path, cfg: Config) -> None:
    """What `chain update --previous` reads back; rewritten only when it changed (an update fingerprints it: bringing last
    year's run up to date must not make this year's carry-over run again)."""
    path, value = config_record(workdir), json.loads(cfg.model_dump_json())
    try:
        if json.loads(path.read_text()) == value:
            return
    except (OSError, json.JSONDecodeError):
        pass
    write_json(path, value)


STALE_NOTE = "OUTDATED.txt"


def mark_stale(workdir: Path, step: str, reason: str | None) -> None:
    """A note in final/ while a run that will replace its products has not finished: after an interrupted
    or failed run, the maps and report there are the previous run's, and say so."""
    final = workdir / "final"
    note = final / STALE_NOTE
    if not final.is_dir() or note.exists():
        return
    write_text(note, f"The products in this folder come from an earlier run. A new run started on {time.strftime('%Y-%m-%d %H:%M:%S')} "
                     f"(first step re-run: {step}, because: {reason}) and has not finished;\nrun `chain run` with the same "
                     "config to bring them up to date (this note is removed when it finishes).\n")


def _run_step(step: Step, ctx: Context, d: Decision) -> StepReport:
    resumable = d.record is not None and d.record.get("signature") == d.signature and d.reason != "forced"
    if not resumable:
        _clear_outputs(step, ctx)
    for f in d.damaged:  # recomputed, not trusted: the rest of the step's work is kept (tiles, runs)
        log.warning("%-14s %s is damaged (size or checksum changed since it was written): recomputing it", step.name, f)
        f.unlink(missing_ok=True)
    log.info("%-14s running: %s", step.name, d.reason)
    rec_path = ledger_path(ctx.workdir, step.name)
    started = time.time()
    write_json(rec_path, {**d.payload, "signature": d.signature, "status": "started", "started": started})
    step.run(ctx)
    missing = [p for p in step.outputs(ctx) if not p.exists()]
    if missing:
        raise StepError(f"step {step.name!r} finished without producing {missing[0]} (a bug: please report it)")
    elapsed = time.time() - started
    write_json(rec_path, {**d.payload, "signature": d.signature, "status": "done", "started": started, "seconds": elapsed,
                          "outputs": snapshot(ctx, step.outputs(ctx))})
    if not step.enabled(ctx):
        log.info("%-14s off (optional, not enabled in the config)", step.name)
        return StepReport(step.name, "off", None)
    log.info("%-14s done in %.1f s", step.name, elapsed)
    return StepReport(step.name, "ran", d.reason, elapsed)

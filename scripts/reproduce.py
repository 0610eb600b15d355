"""One command per results table: train and evaluate every run of a table over seeds, then write the table.

    python -m scripts.reproduce maze2d_umaze_cpu [--seeds 0,1,2] [--launcher local|slurm|submitit_local]
    python -m scripts.reproduce maze2d_umaze_cpu --collect     # only rebuild the table from finished runs
    python -m scripts.reproduce --list
    python -m scripts.reproduce ts_exchange_cpu_levers --runs budget_cosine   # some runs only (their rows)
    python -m scripts.reproduce robot_swap_state_cpu --adopt df:0=outputs/my_run ...   # runs finished by hand
    python -m scripts.reproduce maze2d_umaze_cpu --out outputs/reproduce/umaze_eval --override 'tasks=[validation]' \
        --override 'load=outputs/umaze_s${seed}/checkpoints/last.ckpt'   # evaluate checkpoints trained earlier
    python -m scripts.reproduce video_maze_cpu --runs df --seeds 1 --record   # keep the finished seed in records/

A table is data: ``configurations/tables/<table>.yaml`` names its runs (Hydra overrides of ``main.py``) and its
rows (a run and the ``metrics.json`` keys to report). Each run is one Hydra multirun over the seeds,

    python main.py -m <overrides> seed=0,1,2 hydra.sweep.dir=<out>/<run> hydra.sweep.subdir=seed_${seed}

so ``--launcher slurm`` submits one job per seed (``cluster=slurm``; set the partition with ``--override``).
The table holds, per row: the value of each seed, mean ± std over seeds (sample std), the 95 % interval of the
mean (Student t), the mean success rate where the row names one, the mean wall time of a run and its run;
below the table, the command of every run.
It is written to ``<out>/<table>.md`` with the raw per-seed values in ``<out>/<table>.json`` (default ``<out>``:
``outputs/reproduce/<table>``) and printed. Seeds whose run already finished are not run again, only collected.

An **evaluation run**, ``name: {evaluate: <run>, overrides: [...]}``, trains nothing: it evaluates the checkpoint of
another run of the table, seed by seed, with evaluation overrides added (``<run>``'s overrides, then these, then
``tasks=`` the run's tasks without training and ``load=<out>/<run>/seed_${seed}/checkpoints/last.ckpt``, or
``best.ckpt`` where the run monitors a metric, as its own evaluation after training does). Trained runs go first;
a seed whose checkpoint is not under ``<out>`` (its values came from a record) is trained there again first.
A trained seed that was interrupted (a ``checkpoints/last.ckpt`` under ``<out>`` but no finished run) continues
from that checkpoint with ``resume=auto`` when the command is run again, and its wall time counts both parts.

**The record archive** (``records/<table>/<run>/seed_<seed>/``, committed with the project; ``--records DIR`` for
another, e.g. a folder shared by a cluster's users): ``--record`` keeps the three small files of every run the
table collected (``metrics.json``, ``run_info.json`` with its commit, machine and wall time, and the resolved
``config.yaml``), so a table whose runs do not fit on one machine or in one sitting is built up seed by seed. A
seed with no finished run under ``<out>`` is collected from its record, but only while the record's ``config.yaml``
equals the configuration the table run composes to today (up to ``NEUTRAL_CONFIG_KEYS``; a key in ``LATER_KEYS``,
added since, counts as its old behaviour where a record lacks it): a record of a preset that has changed since is
stale, and that seed is trained again (``--collect`` stops and names the keys that differ). ``--no-records`` ignores
the archive. The table lists the seeds that came from records, with their commits.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from utils.paths import PROJECT_ROOT

TABLES_DIR = PROJECT_ROOT / "configurations" / "tables"
RECORDS_DIR = PROJECT_ROOT / "records"
RECORD_FILES = ("metrics.json", "run_info.json", "config.yaml")
LAUNCHERS = {"local": "cluster=local", "slurm": "cluster=slurm", "submitit_local": "cluster=submitit_local"}


class TableError(ValueError):
    """A table definition or a finished run is not as the table needs; the message says which and how to fix it."""


@dataclass
class Row:
    label: str
    run: str
    metric: str
    success: str | None = None


@dataclass
class Table:
    name: str
    title: str
    seeds: list[int]
    runs: dict[str, list[str]]
    rows: list[Row]
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # evaluation run -> the run whose checkpoints it evaluates


def table_path(name: str) -> Path:
    return TABLES_DIR / f"{name}.yaml"


def available_tables() -> list[str]:
    return sorted(p.stem for p in TABLES_DIR.glob("*.yaml"))


def load_table(name: str) -> Table:
    """Read and check ``configurations/tables/<name>.yaml``."""
    path = table_path(name)
    if not path.is_file():
        raise TableError(f"no table {name!r}: {path} does not exist; tables: {', '.join(available_tables())}")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise TableError(f"{path} is not valid YAML: {err}") from None
    unknown = set(spec) - {"title", "seeds", "runs", "rows", "notes"}
    if unknown:
        raise TableError(f"{path}: unknown keys {sorted(unknown)}; allowed: title, seeds, runs, rows, notes")
    spec_runs = spec.get("runs") or {}
    if not isinstance(spec_runs, dict) or not spec_runs:
        raise TableError(f"{path}: 'runs' must map run names to lists of main.py overrides")
    runs: dict[str, list[str]] = {}
    sources: dict[str, str] = {}
    for run, value in spec_runs.items():
        if isinstance(value, dict):  # an evaluation run of another run's checkpoints
            source, overrides = value.get("evaluate"), value.get("overrides", [])
            source_value = spec_runs.get(source) if isinstance(source, str) else None  # a trained run: a list
            if set(value) - {"evaluate", "overrides"} or not isinstance(source_value, list):
                raise TableError(
                    f"{path}: runs.{run} must be {{evaluate: <a trained run of this table>, overrides: [...]}}; "
                    f"trained runs: {sorted(r for r, v in spec_runs.items() if not isinstance(v, dict))}"
                )
            if any(o.split("=")[0].lstrip("+~") in ("load", "resume") for o in overrides):
                raise TableError(
                    f"{path}: runs.{run} must not set load or resume; the script loads {source}'s checkpoint"
                )
            sources[run] = source
        else:
            overrides = value
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise TableError(f"{path}: runs.{run} must be a list of overrides such as 'experiment=debug'")
        if any(o.split("=")[0].lstrip("+~") in ("seed", "hydra.sweep.dir", "hydra.sweep.subdir") for o in overrides):
            raise TableError(f"{path}: runs.{run} must not set seed or hydra.sweep.*; the script sets them")
        runs[run] = list(overrides)
    for run, source in sources.items():
        runs[run] = [*runs[source], *runs[run]]
    rows = []
    for i, row in enumerate(spec.get("rows") or []):
        missing = {"label", "run", "metric"} - set(row)
        if missing:
            raise TableError(f"{path}: rows[{i}] lacks {sorted(missing)}")
        if row["run"] not in runs:
            raise TableError(f"{path}: rows[{i}].run {row['run']!r} is not one of the runs {sorted(runs)}")
        extra = set(row) - {"label", "run", "metric", "success"}
        if extra:
            raise TableError(
                f"{path}: rows[{i}] has unknown keys {sorted(extra)}; allowed: label, run, metric, success"
            )
        rows.append(Row(**row))
    if not rows:
        raise TableError(f"{path}: 'rows' is empty")
    seeds = spec.get("seeds", [0, 1, 2])
    title, notes = str(spec.get("title", name)), str(spec.get("notes", ""))
    return Table(name, title, [int(s) for s in seeds], runs, rows, notes, sources=sources)


def select_runs(table: Table, runs: str | None) -> Table:
    """The table restricted to the comma-separated ``runs`` and their rows (``--runs``), keeping the runs whose
    checkpoints a chosen evaluation run reads; the whole table for None."""
    if runs is None:
        return table
    chosen = [r.strip() for r in runs.split(",") if r.strip()]
    unknown = [r for r in chosen if r not in table.runs]
    if unknown or not chosen:
        raise TableError(f"--runs {runs!r}: table {table.name} has the runs {sorted(table.runs)}")
    needed = set(chosen) | {table.sources[r] for r in chosen if r in table.sources}  # an evaluation needs its source
    return replace(
        table,
        runs={r: table.runs[r] for r in table.runs if r in needed},
        rows=[row for row in table.rows if row.run in chosen],
    )


def multirun_command(table: Table, run: str, seeds: list[int], out: Path, launcher: str, extra: list[str]) -> list[str]:
    """The ``main.py -m`` command of one run over the seeds."""
    if launcher not in LAUNCHERS:
        raise TableError(f"unknown --launcher {launcher!r}; choose one of {sorted(LAUNCHERS)}")
    return [
        sys.executable, "main.py", "-m", *run_overrides(table, run, out, extra), LAUNCHERS[launcher],
        f"seed={','.join(str(s) for s in seeds)}", f"hydra.sweep.dir={out / run}", "hydra.sweep.subdir=seed_${seed}",
    ]  # fmt: skip


def run_overrides(table: Table, run: str, out: Path, extra: list[str]) -> list[str]:
    """Every override of a run's command but its seed and launcher: the table's, an evaluation run's tasks and load,
    and the command line's ``--override``s."""
    return [*table.runs[run], *evaluation_overrides(table, run, out, extra), *extra]


def source_checkpoint(table: Table, run: str, extra: list[str]) -> tuple[str, list[str]]:
    """``(checkpoint file name, tasks)`` of an evaluation run: the file its source's own evaluation after training
    reads (``best.ckpt`` when the source monitors a metric, else ``last.ckpt``) and the source's tasks other than
    training, unless the evaluation run sets ``tasks`` itself."""
    source = table.sources[run]
    config = composed_config([*table.runs[source], *extra], 0)
    name = "best.ckpt" if (config.get("checkpoint") or {}).get("monitor") else "last.ckpt"
    tasks = [t for t in config.get("tasks") or [] if t != "training"]
    if not tasks:
        raise TableError(
            f"run {run!r} evaluates {source!r}, whose tasks are only training: set tasks= in its overrides"
        )
    return name, tasks


def evaluation_overrides(table: Table, run: str, out: Path, extra: list[str]) -> list[str]:
    """What an evaluation run adds to its overrides: its tasks and the source checkpoint of each seed (none for a
    trained run)."""
    if run not in table.sources:
        return []
    name, tasks = source_checkpoint(table, run, extra)
    own = table.runs[run][len(table.runs[table.sources[run]]) :]  # after the source's overrides (load_table)
    sets_tasks = any(o.split("=", 1)[0].lstrip("+~") == "tasks" for o in own)
    load = f"load={run_dir(out, table.sources[run], 0).parent}/seed_${{seed}}/checkpoints/{name}"
    return [load] if sets_tasks else [f"tasks=[{','.join(tasks)}]", load]


def checkpoint_path(table: Table, run: str, out: Path, seed: int, extra: list[str]) -> Path:
    """The source checkpoint that evaluation run ``run`` reads for ``seed``."""
    return run_dir(out, table.sources[run], seed) / "checkpoints" / source_checkpoint(table, run, extra)[0]


def split_interrupted(
    table: Table, run: str, seeds: list[int], out: Path, extra: list[str]
) -> tuple[list[int], list[int]]:
    """``(fresh, interrupted)`` seeds of a run to train: a trained run's seed whose folder under ``out`` holds a
    ``checkpoints/last.ckpt`` but did not finish was interrupted (a session's end, a preempted job) and continues
    from that checkpoint with ``resume=auto`` (an exact resume); its ``wall_time_s`` then counts every part. An
    interrupted run of another configuration than the table run's today is an error: it is neither continued nor
    overwritten."""
    if run in table.sources:  # an evaluation run trains nothing: it is simply run again
        return list(seeds), []
    stopped = [s for s in seeds if (run_dir(out, run, s) / "checkpoints" / "last.ckpt").is_file()]
    for s in stopped:
        differences = config_differences(run_dir(out, run, s), run_overrides(table, run, out, extra), s)
        if differences:
            raise TableError(
                f"run {run!r} seed {s}: {run_dir(out, run, s)} was interrupted with another configuration "
                f"({_shown(differences)}); move or delete that folder to train the seed again"
            )
    return [s for s in seeds if s not in stopped], stopped


def run_dir(out: Path, run: str, seed: int) -> Path:
    return out / run / f"seed_{seed}"


def student_t975(dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def summarise(values: list[float]) -> dict[str, float]:
    """Mean, sample std and the half-width of the 95 % interval of the mean (nan for one seed)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "std": math.nan, "ci95": math.nan}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return {"mean": mean, "std": std, "ci95": student_t975(n - 1) * std / math.sqrt(n)}


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise TableError(f"{path} is missing: the {what} did not finish; rerun without --collect, or check its log")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TableError(f"{path} is not valid JSON ({err}); rerun that seed") from None


def record_dir(records: Path, table: str, run: str, seed: int) -> Path:
    return records / table / run / f"seed_{seed}"


def _finished_dir(d: Path) -> bool:
    try:
        return (d / "metrics.json").is_file() and "wall_time_s" in json.loads((d / "run_info.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False


def finished(out: Path, run: str, seed: int) -> bool:
    """A run counts as finished when it wrote its metrics and its wall time (``experiments.run``)."""
    return _finished_dir(run_dir(out, run, seed))


def locate(
    table: Table, out: Path, records: Path | None, run: str, seed: int, extra: list[str]
) -> tuple[Path | None, list[str]]:
    """``(folder, stale)``: the finished run under ``out``, else a record whose configuration is the table run's
    today, else None; ``stale`` lists the differing keys of a record that could not be used (empty otherwise)."""
    if finished(out, run, seed):
        return run_dir(out, run, seed), []
    if records is None:
        return None, []
    rec = record_dir(records, table.name, run, seed)
    if not _finished_dir(rec):
        return None, []
    differences = config_differences(rec, run_overrides(table, run, out, extra), seed, ignored(table, run))
    return (None, differences) if differences else (rec, [])


def ignored(table: Table, run: str) -> tuple[str, ...]:
    """Config keys that may differ between two runs of ``run`` of the table: an evaluation run's ``load`` is its
    source's checkpoint of the same seed, wherever that was written."""
    return ("load",) if run in table.sources else ()


def _shown(differences: list[str]) -> str:
    """The first differences of two configurations, for an error message."""
    more = len(differences) - 6
    return "; ".join(differences[:6]) + (f"; and {more} more" if more > 0 else "")


def write_record(source: Path, target: Path) -> None:
    """Copy a finished run's ``RECORD_FILES`` into the record folder ``target`` (each file replaced atomically)."""
    missing = [name for name in RECORD_FILES if not (source / name).is_file()]
    if missing:
        raise TableError(f"{source} has no {', '.join(missing)}: a record needs all of {list(RECORD_FILES)}")
    target.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        tmp = target / f".{name}.tmp"
        tmp.write_bytes((source / name).read_bytes())
        tmp.replace(target / name)


# overrides that change where a run writes or how it logs, never what it computes: ignored when adopting a run
# (``resume``: an interrupted run continues exactly where it stopped, so it computes what an uninterrupted one does)
NEUTRAL_KEYS = (
    "hydra.", "paths.", "output_dir", "logger", "trainer.enable_progress_bar", "cluster", "launcher", "resume",
)  # fmt: skip


def essential(overrides: list[str]) -> tuple[list[str], int]:
    """``(sorted overrides that change the result, seed)`` of a main.py command line (seed 0 when not given)."""
    kept, seed = [], 0
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key == "seed":
            seed = int(o.split("=", 1)[1])
        elif not key.startswith(NEUTRAL_KEYS) and o not in ("-m", "--multirun") and not o.endswith(".py"):
            kept.append(o)
    return sorted(kept), seed


# config keys that only move outputs or name a run, never change what it computes: ignored when comparing configs
NEUTRAL_CONFIG_KEYS = (
    "paths", "logger", "output_dir", "name", "cluster", "trainer.enable_progress_bar", "hydra", "resume",
)  # fmt: skip
# Keys added to the configuration after records were made, each with the value that does what the code did before
# the key existed: a record without one is compared as if it had run with that value (the table run's value must then
# be the same for the record to stand), so adding an option does not make every record stale.
LATER_KEYS = {
    "evaluator.surprise_commit": "flagged",  # memory_surprise committed surprising tokens at flag_level (2026-12-03)
}


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def _essential_config(config: dict[str, Any]) -> dict[str, Any]:
    neutral = lambda key: any(key == k or key.startswith(k + ".") for k in NEUTRAL_CONFIG_KEYS)  # noqa: E731
    return {k: v for k, v in _flatten(config).items() if not neutral(k)}


_COMPOSED: dict[tuple[tuple[str, ...], int], dict[str, Any]] = {}


def composed_config(overrides: list[str], seed: int) -> dict[str, Any]:
    """The resolved configuration ``main.py`` builds from ``overrides`` and ``seed``, as plain containers (what a run
    writes to its ``config.yaml``), composed without running anything (once per process for each argument)."""
    key = (tuple(overrides), seed)
    if key not in _COMPOSED:
        _COMPOSED[key] = _compose(overrides, seed)
    return _COMPOSED[key]


def _compose(overrides: list[str], seed: int) -> dict[str, Any]:  # the uncached composition
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    kept = [o for o, k in zip(overrides, keys) if k != "seed" and not k.startswith("hydra.")]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configurations"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*kept, f"seed={seed}", "output_dir=/adopt-check"])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def config_differences(source: Path, overrides: list[str], seed: int, ignore: tuple[str, ...] = ()) -> list[str]:
    """Where the finished run's resolved ``config.yaml`` differs from what the table run composes to today, up to the
    keys in ``NEUTRAL_CONFIG_KEYS`` and ``ignore``: ``["key: run value != table value", ...]`` (empty when they are the
    same)."""
    path = source / "config.yaml"
    if not path.is_file():
        return [f"{path} is missing, so the configurations cannot be compared"]
    try:
        run_config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        return [f"{path} is not valid YAML ({err})"]
    got = _essential_config(run_config)
    # composed with the run's own folders, so that values made from them (a dataset's data_dir under
    # paths.data_cache) compare equal on another machine
    folders = [f'paths.{k}="{v}"' for k, v in (run_config.get("paths") or {}).items() if isinstance(v, str)]
    want = _essential_config(composed_config([*overrides, *folders], seed))
    got.update({k: v for k, v in LATER_KEYS.items() if k in want and k not in got})
    return [
        f"{key}: {got.get(key, '<absent>')!r} != {want.get(key, '<absent>')!r}"
        for key in sorted(set(got) | set(want))
        if got.get(key, "<absent>") != want.get(key, "<absent>") and key not in ignore
    ]


def adopt(table: Table, out: Path, spec: str, extra: list[str]) -> tuple[str, int]:
    """Take a run finished by hand, ``RUN:SEED=DIR``, into the table: allowed when its command line (``run_info.json``)
    is the table run's overrides and that seed, up to options that only move outputs or logs, or else when its
    resolved ``config.yaml`` equals the configuration the table run composes to for that seed (up to
    ``NEUTRAL_CONFIG_KEYS``: another command that sets the same values); linked as ``<out>/<run>/seed_<seed>``.
    Returns ``(run, seed)``."""
    try:
        head, folder = spec.split("=", 1)
        run, seed_text = head.split(":", 1)
        seed = int(seed_text)
    except ValueError:
        raise TableError(f"--adopt {spec!r}: write RUN:SEED=DIR, e.g. df:0=outputs/my_run") from None
    if run not in table.runs:
        raise TableError(f"--adopt {spec!r}: {run!r} is not a run of table {table.name} ({sorted(table.runs)})")
    source = Path(folder).expanduser().resolve()
    info = _read_json(source / "run_info.json", f"adopted run {source}")
    _read_json(source / "metrics.json", f"adopted run {source}")
    if "wall_time_s" not in info:
        raise TableError(f"--adopt {spec!r}: {source} did not finish (run_info.json has no wall_time_s)")
    got, got_seed = essential(list(info.get("argv", [])))
    overrides = run_overrides(table, run, out, extra)
    want, _ = essential(overrides)
    if got != want or got_seed != seed:
        differences = config_differences(source, overrides, seed, ignored(table, run))
        if differences:
            raise TableError(
                f"--adopt {spec!r}: {source} ran {got} with seed {got_seed}, but run {run!r} of table {table.name} "
                f"is {want} with seed {seed}, and the resolved configurations differ ({_shown(differences)}); only a "
                "run of the same command or the same configuration can stand in for it"
            )
    target = run_dir(out, run, seed)
    if target.is_symlink() and target.resolve() == source:
        return run, seed
    if target.exists() or target.is_symlink():
        raise TableError(f"--adopt {spec!r}: {target} exists already; remove it to adopt another run")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source, target_is_directory=True)
    return run, seed


def collect(
    table: Table,
    seeds: list[int],
    out: Path,
    commands: dict[str, str],
    reproduce_cmd: str = "",
    records: dict[tuple[str, int], Path] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The markdown table, and the raw per-seed values, from each run's ``metrics.json`` and ``run_info.json``: read
    from ``records[(run, seed)]`` where given (a record's folder), else from ``<out>/<run>/seed_<seed>``."""
    records = records or {}
    where = lambda run, s: records.get((run, s), run_dir(out, run, s))  # noqa: E731
    raw: dict[str, Any] = {"table": table.name, "seeds": seeds, "rows": []}
    fmt = lambda v: "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"  # noqa: E731
    lines = [
        f"# {table.title}",
        "",
        f"Seeds {', '.join(map(str, seeds))}; mean ± std (sample std over seeds); 95 % CI: mean ± t·std/√n."
        + (f" Reproduce: `{reproduce_cmd}`." if reproduce_cmd else ""),
        "",
        f"| row | {' | '.join(f'seed {s}' for s in seeds)} | mean ± std | 95 % CI | success | wall time / run | run |",
        "|---|" + "---|" * len(seeds) + "---|---|---|---|---|",
    ]
    for row in table.rows:
        values, success, walls = [], [], []
        for s in seeds:
            d = where(row.run, s)
            metrics = _read_json(d / "metrics.json", f"run {row.run} seed {s}")
            if row.metric not in metrics:
                raise TableError(
                    f"{d / 'metrics.json'} has no {row.metric!r} (rows of table {table.name}); keys: {sorted(metrics)}"
                )
            values.append(float(metrics[row.metric]))
            if row.success:
                success.append(float(metrics.get(row.success, math.nan)))
            walls.append(float(_read_json(d / "run_info.json", f"run {row.run} seed {s}").get("wall_time_s", math.nan)))
        stats = summarise(values)
        raw["rows"].append(
            {"label": row.label, "run": row.run, "metric": row.metric, "values": values, **stats,
             "success": success or None, "wall_time_s": walls, "command": commands[row.run]}
        )  # fmt: skip
        ci = (
            "—"
            if math.isnan(stats["ci95"])
            else f"[{stats['mean'] - stats['ci95']:.4g}, {stats['mean'] + stats['ci95']:.4g}]"
        )
        succ = fmt(sum(success) / len(success)) if success else "—"
        wall = sum(walls) / len(walls)
        wall_s = "—" if math.isnan(wall) else f"{wall / 60:.1f} min"
        lines.append(
            f"| {row.label} | {' | '.join(fmt(v) for v in values)} | {fmt(stats['mean'])} ± {fmt(stats['std'])} | "
            f"{ci} | {succ} | {wall_s} | {row.run} |"
        )
    lines += ["", "Commands, one Hydra multirun per run:", ""]
    lines += [f"- {run}: `{commands[run]}`" for run in table.runs]
    adopted, recorded = [], []
    for run in table.runs:
        for seed in seeds:
            d = where(run, seed)
            if not (d.is_symlink() or (run, seed) in records):
                continue
            info = _read_json(d / "run_info.json", f"run {run} seed {seed}")
            sha = str(info.get("git_sha", "unknown"))[:7] + (", uncommitted changes" if info.get("git_dirty") else "")
            if (run, seed) in records:
                machine = info.get("machine") or {}
                on = f", {machine['host']}, {machine.get('cpus')} CPUs" if machine.get("host") else ""
                started = f", started {info['started']}" if info.get("started") else ""
                shown = d.relative_to(PROJECT_ROOT) if d.is_relative_to(PROJECT_ROOT) else d
                recorded.append(f"run {run}, seed {seed}: the record {shown} (commit {sha}{on}{started})")
            else:
                adopted.append(f"run {run}, seed {seed}: adopted from {d.resolve()} (commit {sha})")
    raw["adopted"], raw["recorded"] = adopted, recorded
    if adopted:
        lines += ["", "Runs finished earlier by the same command or configuration, taken in (`--adopt`):", ""]
        lines += [f"- {a}" for a in adopted]
    if recorded:
        lines += ["", "Seeds collected from the record archive (the same resolved configuration as today's run):", ""]
        lines += [f"- {r}" for r in recorded]
    if table.notes:
        lines += ["", table.notes.strip()]
    return "\n".join(lines) + "\n", raw


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", nargs="?", help="a file name under configurations/tables/ without .yaml")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the table's own)")
    parser.add_argument("--launcher", default="local", choices=sorted(LAUNCHERS))
    parser.add_argument("--out", default=None, help="output folder (default: outputs/reproduce/<table>)")
    parser.add_argument("--override", action="append", default=[], help="an extra main.py override for every run")
    parser.add_argument("--collect", action="store_true", help="do not run; build the table from finished runs")
    parser.add_argument(
        "--runs", default=None, help="comma-separated runs of the table: train and report only these (and their rows)"
    )
    parser.add_argument("--list", action="store_true", help="list the tables")
    parser.add_argument(
        "--adopt", action="append", default=[], metavar="RUN:SEED=DIR",
        help="take a run finished earlier by the same command (its run_info.json argv) or with the same resolved "
        "configuration (its config.yaml) into the table",
    )  # fmt: skip
    parser.add_argument(
        "--records", default=str(RECORDS_DIR), help="the record archive (default: records/ in the project)"
    )
    parser.add_argument("--no-records", action="store_true", help="neither read nor write the record archive")
    parser.add_argument(
        "--record", action="store_true", help="after collecting, keep every collected run's files in the archive"
    )
    args = parser.parse_args(argv)
    if args.list or not args.table:
        listing = "\n".join(available_tables())
        print(listing)
        return listing
    try:
        full = load_table(args.table)
        table = select_runs(full, args.runs)
        seeds = table.seeds if args.seeds is None else [int(s) for s in args.seeds.split(",") if s.strip()]
        out = Path(args.out or PROJECT_ROOT / "outputs" / "reproduce" / table.name).resolve()
        records = None if args.no_records else Path(args.records).expanduser().resolve()
        if args.record and records is None:
            raise TableError("--record and --no-records contradict each other; drop one")
        for spec in args.adopt:
            adopt(full, out, spec, args.override)
        commands, todo = {}, {}
        for run in table.runs:
            cmd = multirun_command(table, run, seeds, out, args.launcher, args.override)
            commands[run] = shlex.join(["python", *cmd[1:]])
            todo[run] = []
            for s in seeds:
                folder, stale = locate(table, out, records, run, s, args.override)
                if folder is None:
                    todo[run].append(s)
                    if stale:
                        shown = _shown(stale)
                        if args.collect:
                            raise TableError(
                                f"run {run!r} seed {s}: the record {record_dir(records, table.name, run, s)} was made "
                                f"with another configuration ({shown}); rerun without --collect to train this seed "
                                "again, or delete the stale record"
                            )
                        print(f"[reproduce] run {run} seed {s}: the record is stale ({shown}); training it", flush=True)
        if not args.collect:
            for run, source in table.sources.items():  # an evaluation reads its source's checkpoint under <out>
                for s in todo.get(run, []):
                    ckpt = checkpoint_path(table, run, out, s, args.override)
                    if ckpt.is_file() or s in todo[source]:
                        continue
                    if finished(out, source, s):
                        raise TableError(
                            f"run {run!r} seed {s} evaluates {ckpt}, which is missing although run {source!r} "
                            f"finished there; delete {run_dir(out, source, s)} to train that seed again"
                        )
                    todo[source] = sorted([*todo[source], s])  # its values came from a record: train it here
            for run in sorted(table.runs, key=lambda r: r in table.sources):  # trained runs, then evaluations
                # runs already finished, or recorded, are only collected; interrupted ones continue (resume=auto)
                fresh, stopped = split_interrupted(table, run, todo[run], out, args.override)
                for group, extra in ((fresh, []), (stopped, ["resume=auto"])):
                    if not group:
                        continue
                    if extra:
                        print(f"[reproduce] run {run} seeds {group}: interrupted; continuing from their last.ckpt")
                    cmd = multirun_command(table, run, group, out, args.launcher, [*args.override, *extra])
                    print(f"[reproduce] {shlex.join(['python', *cmd[1:]])}", flush=True)
                    done = subprocess.run(cmd, cwd=PROJECT_ROOT)
                    if done.returncode != 0:
                        raise TableError(f"run {run!r} failed (exit {done.returncode}): {commands[run]}")
        recorded = {}  # seeds collected from the record archive
        for run in table.runs:
            for s in seeds:
                if not finished(out, run, s) and (folder := locate(table, out, records, run, s, args.override)[0]):
                    recorded[(run, s)] = folder
        again = ["python", "-m", "scripts.reproduce", table.name, "--seeds", ",".join(map(str, seeds))]
        if args.runs is not None:
            again += ["--runs", ",".join(table.runs)]
        if args.launcher != "local":
            again += ["--launcher", args.launcher]
        for override in args.override:
            again += ["--override", override]
        markdown, raw = collect(table, seeds, out, commands, shlex.join(again), recorded)
        if args.record:
            for run in table.runs:
                for s in seeds:
                    if (run, s) not in recorded:
                        write_record(run_dir(out, run, s), record_dir(records, table.name, run, s))
            print(f"[reproduce] recorded the runs of {sorted(table.runs)} under {records / table.name}", flush=True)
    except (TableError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    out.mkdir(parents=True, exist_ok=True)
    stem = table.name if args.runs is None else f"{table.name}.{'+'.join(table.runs)}"  # a part of the table
    (out / f"{stem}.md").write_text(markdown)
    (out / f"{stem}.json").write_text(json.dumps(raw, indent=2))
    print(markdown)
    return markdown


if __name__ == "__main__":
    main()

"""``scripts.reproduce``: one command trains and evaluates a table's runs over seeds and writes the table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scripts import reproduce


def test_debug_table_over_two_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "debug"
    markdown = reproduce.main(["debug", "--seeds", "0,1", "--out", str(out)])
    table = (out / "debug.md").read_text()
    assert table == markdown
    for seed in (0, 1):
        assert (out / "debug" / f"seed_{seed}" / "metrics.json").is_file()
        assert (out / "debug" / f"seed_{seed}" / "checkpoints" / "last.ckpt").is_file()
    row = next(line for line in table.splitlines() if line.startswith("| validation loss |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # label, seed 0, seed 1, mean ± std, CI, success, wall time, command
    seed0, seed1 = float(cells[1]), float(cells[2])
    assert seed0 != seed1  # two different trainings
    # the evaluation run validated each seed's own last checkpoint again, after the training runs: the same loss
    for seed in (0, 1):
        trained = json.loads((out / "debug" / f"seed_{seed}" / "metrics.json").read_text())
        again = json.loads((out / "again" / f"seed_{seed}" / "metrics.json").read_text())
        assert (
            again["val/loss"] == trained["val/loss"] and again["trainer/global_step"] == 0 and "train/loss" not in again
        )
        config = (out / "again" / f"seed_{seed}" / "config.yaml").read_text()
        assert f"load: {out}/debug/seed_{seed}/checkpoints/last.ckpt" in config and "sampling_steps: 4" in config
    command = next(line for line in table.splitlines() if line.startswith("- again: `python main.py -m"))
    assert f"'load={out}/debug/seed_${{seed}}/checkpoints/last.ckpt'" in command and "'tasks=[validation]'" in command
    mean, std = (float(v) for v in cells[3].split("±"))
    assert mean == pytest.approx((seed0 + seed1) / 2, rel=1e-3)
    assert std == pytest.approx(abs(seed0 - seed1) / math.sqrt(2), rel=1e-2)  # from 4-digit cells
    assert cells[5] == "—" and cells[6].endswith("min") and cells[7] == "debug"
    command = next(line for line in table.splitlines() if line.startswith("- debug: `python main.py -m"))
    assert "experiment=debug" in command and "seed=0,1" in command
    raw = json.loads((out / "debug.json").read_text())
    assert raw["rows"][0]["values"] == pytest.approx([seed0, seed1], rel=1e-3)
    # finished runs are only collected: neither --collect nor a plain rerun trains again
    stamp = (out / "debug" / "seed_0" / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    assert reproduce.main(["debug", "--seeds", "0,1", "--out", str(out), "--collect"]) == markdown
    assert reproduce.main(["debug", "--seeds", "0,1", "--out", str(out)]) == markdown
    assert (out / "debug" / "seed_0" / "checkpoints" / "last.ckpt").stat().st_mtime_ns == stamp
    # seed 1 as an interruption leaves it (its checkpoints kept, run_info.json without a wall time): a rerun
    # continues it from its last.ckpt with resume=auto, and trains nothing else
    stopped = out / "debug" / "seed_1"
    info = json.loads((stopped / "run_info.json").read_text())
    info.pop("wall_time_s")
    (stopped / "run_info.json").write_text(json.dumps(info))
    config = (stopped / "config.yaml").read_text()
    (stopped / "config.yaml").write_text(config.replace("max_steps: 20", "max_steps: 21"))
    with pytest.raises(SystemExit):  # interrupted under another configuration: neither continued nor overwritten
        reproduce.main(["debug", "--seeds", "0,1", "--out", str(out)])
    assert "interrupted with another configuration (trainer.max_steps: 21 != 20)" in capsys.readouterr().err
    (stopped / "config.yaml").write_text(config)
    table = reproduce.main(["debug", "--seeds", "0,1", "--out", str(out)])
    assert f"| validation loss | {cells[1]} | {cells[2]} |" in table  # the exact resume changed no value
    assert "run debug seeds [1]: interrupted; continuing from their last.ckpt" in capsys.readouterr().out
    assert (out / "debug" / "seed_0" / "checkpoints" / "last.ckpt").stat().st_mtime_ns == stamp
    again = json.loads((stopped / "run_info.json").read_text())
    assert "resume=auto" in again["argv"] and again["segments"][0]["started"] == info["started"]
    assert again["wall_time_s"] > again["segment_wall_time_s"]
    resumed = json.loads((stopped / "metrics.json").read_text())
    assert resumed["trainer/global_step"] == 20 and resumed["val/loss"] == pytest.approx(seed1, rel=1e-3)


def finished_run(folder: Path, argv: list[str], loss: float) -> Path:
    """A run folder as ``experiments.run`` leaves it: metrics and the run info with its command line."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"val/loss": loss, "train/loss": 2 * loss}))
    info = {"argv": argv, "git_sha": "0123456789abcdef", "git_dirty": False, "wall_time_s": 60.0}
    (folder / "run_info.json").write_text(json.dumps(info))
    return folder


def test_runs_finished_by_hand_with_the_same_command_can_be_adopted(tmp_path: Path) -> None:
    out = tmp_path / "table"
    same = ["main.py", "experiment=debug", "trainer.enable_progress_bar=false", "seed=1", "logger=csv",
            "hydra.run.dir=/somewhere", "paths.data_cache=/cache"]  # fmt: skip
    runs = [finished_run(tmp_path / "a", ["main.py", "experiment=debug", "trainer.enable_progress_bar=false"], 0.5),
            finished_run(tmp_path / "b", same, 0.7)]  # fmt: skip
    args = ["debug", "--seeds", "0,1", "--out", str(out), "--collect", "--runs", "debug"]
    markdown = reproduce.main([*args, "--adopt", f"debug:0={runs[0]}", "--adopt", f"debug:1={runs[1]}"])
    row = next(line for line in markdown.splitlines() if line.startswith("| validation loss |"))
    assert [c.strip() for c in row.strip("|").split("|")][1:3] == ["0.5", "0.7"]
    assert f"run debug, seed 1: adopted from {runs[1]} (commit 0123456)" in markdown
    assert (out / "debug" / "seed_1").resolve() == runs[1]
    assert reproduce.main(args) == markdown  # adopted once, collected from then on
    # another command cannot stand in: a changed setting, or another seed
    other = finished_run(tmp_path / "c", ["main.py", "experiment=debug", "trainer.max_steps=5"], 0.1)
    table = reproduce.load_table("debug")
    with pytest.raises(reproduce.TableError, match="only a run of the same command"):
        reproduce.adopt(table, tmp_path / "t2", f"debug:0={other}", [])
    with pytest.raises(reproduce.TableError, match="only a run of the same command"):
        reproduce.adopt(table, tmp_path / "t2", f"debug:0={runs[1]}", [])  # that run is seed 1
    with pytest.raises(reproduce.TableError, match="RUN:SEED=DIR"):
        reproduce.adopt(table, tmp_path / "t2", "debug=somewhere", [])
    twin = finished_run(tmp_path / "d", ["main.py", "experiment=debug"], 0.6)  # seed 0 is taken by run a
    with pytest.raises(reproduce.TableError, match="exists already"):
        reproduce.adopt(table, out, f"debug:0={twin}", [])


def hand_run(folder: Path, overrides: list[str], loss: float = 0.25) -> Path:
    """A finished run with its config.yaml and run info written as ``experiments.run`` writes them."""
    from hydra import compose, initialize_config_dir

    from experiments.run import save_run_info

    with initialize_config_dir(config_dir=str(reproduce.PROJECT_ROOT / "configurations"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, f"output_dir={folder}"])
    save_run_info(cfg, folder)
    info = json.loads((folder / "run_info.json").read_text())
    info.update(argv=["main.py", *overrides], wall_time_s=30.0)
    (folder / "run_info.json").write_text(json.dumps(info))
    (folder / "metrics.json").write_text(json.dumps({"val/loss": loss, "train/loss": 2 * loss}))
    return folder


def test_a_run_of_another_command_with_the_same_resolved_config_can_be_adopted(tmp_path: Path) -> None:
    """A lever run that spells out a preset's values (another command line) stands in for the preset's run when the
    config.yaml it wrote equals what the table run composes to; one changed value is refused and named."""
    table = reproduce.load_table("debug")  # run debug: [experiment=debug]
    same = hand_run(tmp_path / "same", ["experiment=debug", "trainer.max_steps=20", "name=lever", "seed=1",
                                        "paths.data_cache=/elsewhere"])  # fmt: skip
    assert reproduce.adopt(table, tmp_path / "out", f"debug:1={same}", []) == ("debug", 1)
    assert (tmp_path / "out" / "debug" / "seed_1").resolve() == same.resolve()
    changed = hand_run(tmp_path / "changed", ["experiment=debug", "trainer.max_steps=21"])
    with pytest.raises(reproduce.TableError, match=r"trainer\.max_steps: 21 != 20"):
        reproduce.adopt(table, tmp_path / "out", f"debug:0={changed}", [])
    with pytest.raises(reproduce.TableError, match=r"^(?=.*seed: 1 != 0).*same configuration"):
        reproduce.adopt(table, tmp_path / "out2", f"debug:0={same}", [])  # that run is seed 1


def test_records_carry_a_table_across_machines_and_a_stale_record_is_trained_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--record`` keeps each collected seed's files; another output folder (another machine, a later session) then
    collects the table from the records alone; a record whose configuration is no longer the table run's is not
    used: ``--collect`` names the differing key, a plain run trains that seed again."""
    records, first = tmp_path / "records", tmp_path / "first"
    for seed, loss in [(0, 0.25), (1, 0.75)]:  # seed 0 as its run writes it, seed 1 by another command (adopted)
        hand_run(first / "debug" / f"seed_{seed}", ["experiment=debug", "trainer.enable_progress_bar=false",
                                                    f"seed={seed}", "logger=csv"], loss)  # fmt: skip
    args = ["debug", "--seeds", "0,1", "--records", str(records), "--runs", "debug"]
    made = reproduce.main([*args, "--out", str(first), "--collect", "--record"])
    assert "| validation loss | 0.25 | 0.75 |" in made and "record archive" not in made
    for seed in (0, 1):
        kept = reproduce.record_dir(records, "debug", "debug", seed)
        assert sorted(p.name for p in kept.iterdir()) == sorted(reproduce.RECORD_FILES)
        assert (kept / "metrics.json").read_text() == (first / "debug" / f"seed_{seed}" / "metrics.json").read_text()
    info = json.loads((records / "debug" / "debug" / "seed_0" / "run_info.json").read_text())
    assert info["machine"]["cpus"] >= 1 and info["started"]
    # a new machine: nothing under its --out, the records alone make the same table
    again = reproduce.main([*args, "--out", str(tmp_path / "second"), "--collect"])
    assert "| validation loss | 0.25 | 0.75 |" in again
    assert f"run debug, seed 1: the record {records / 'debug' / 'debug' / 'seed_1'} (commit" in again
    assert not (tmp_path / "second" / "debug").exists()
    with pytest.raises(SystemExit):  # --no-records: the seeds are missing
        reproduce.main([*args, "--out", str(tmp_path / "third"), "--collect", "--no-records"])
    # the preset changed since seed 1 was recorded: its record is stale
    stale = records / "debug" / "debug" / "seed_1" / "config.yaml"
    stale.write_text(stale.read_text().replace("max_steps: 20", "max_steps: 21"))
    table = reproduce.load_table("debug")
    source, differences = reproduce.locate(table, tmp_path / "second", records, "debug", 1, [])
    assert source is None and differences == ["trainer.max_steps: 21 != 20"]
    assert reproduce.locate(table, tmp_path / "second", records, "debug", 0, [])[0] == reproduce.record_dir(
        records, "debug", "debug", 0
    )
    with pytest.raises(SystemExit):
        reproduce.main([*args, "--out", str(tmp_path / "second"), "--collect"])
    error = capsys.readouterr().err
    assert "seed_1 was made with another configuration (trainer.max_steps: 21 != 20)" in error
    assert "rerun without --collect" in error
    # a record made on a machine with other folders: values built from paths.* (a dataset's data_dir) still match
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "robot.yaml").write_text("runs: {df: [experiment=robot_swap_state_cpu]}\n"
                                                    "rows: [{label: x, run: df, metric: val/loss}]\n")  # fmt: skip
    elsewhere = ["experiment=robot_swap_state_cpu", "paths.data_cache=/other/machine/cache", "seed=2"]
    hand_run(reproduce.record_dir(records, "robot", "df", 2), elsewhere)
    with monkeypatch.context() as patch:
        patch.setattr(reproduce, "TABLES_DIR", tmp_path / "tables")
        robot = reproduce.load_table("robot")
    assert reproduce.locate(robot, tmp_path / "o", records, "df", 2, [])[0] == reproduce.record_dir(
        records, "robot", "df", 2
    )
    trained: list[list[str]] = []

    real_run = reproduce.subprocess.run

    def fake_train(cmd: list[str], **kwargs: object) -> object:  # stands in for the Hydra multirun of the stale seed
        if cmd[0] == "git":  # experiments.run's own git query goes through
            return real_run(cmd, **kwargs)
        trained.append(cmd)
        hand_run(tmp_path / "second" / "debug" / "seed_1", ["experiment=debug", "seed=1"], 0.5)
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(reproduce.subprocess, "run", fake_train)
    fresh = reproduce.main([*args, "--out", str(tmp_path / "second")])
    assert len(trained) == 1 and "seed=1" in trained[0] and "seed=0,1" not in trained[0]
    assert "| validation loss | 0.25 | 0.5 |" in fresh and "run debug, seed 0: the record" in fresh
    assert "seed 1: the record" not in fresh


def test_runs_option_trains_and_reports_only_the_chosen_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--runs b``: only run b's rows, written beside the whole table's files; the whole table needs every run."""
    monkeypatch.setattr(reproduce, "TABLES_DIR", tmp_path)
    (tmp_path / "t.yaml").write_text(
        "runs: {a: [experiment=debug], b: [experiment=debug, trainer.max_steps=3]}\n"
        "rows: [{label: from a, run: a, metric: val/loss}, {label: from b, run: b, metric: val/loss}]\n"
    )
    out = tmp_path / "o"
    for seed, loss in [(0, 0.25), (1, 0.75)]:
        finished_run(out / "b" / f"seed_{seed}", ["main.py", "experiment=debug", "trainer.max_steps=3"], loss)
    markdown = reproduce.main(["t", "--seeds", "0,1", "--out", str(out), "--runs", "b"])  # finished: not retrained
    assert "| from b | 0.25 | 0.75 | 0.5 ± 0.3536" in markdown and "from a" not in markdown
    assert "--runs b" in markdown and (out / "t.b.md").read_text() == markdown and (out / "t.b.json").is_file()
    assert not (out / "t.md").exists()
    with pytest.raises(SystemExit):  # run a never ran: the whole table cannot be collected
        reproduce.main(["t", "--seeds", "0,1", "--out", str(out), "--collect"])
    with pytest.raises(reproduce.TableError, match=r"has the runs \['a', 'b'\]"):
        reproduce.select_runs(reproduce.load_table("t"), "c")


def test_an_evaluation_run_reads_its_source_checkpoint_and_a_recorded_source_is_trained_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An evaluation run (``{evaluate: a, overrides}``) runs after the trained runs with ``tasks`` and ``load`` set to
    seed's checkpoint of ``a`` under ``--out``; a seed of ``a`` whose values come from a record has no checkpoint
    there, so it is trained again first; the evaluation's record is valid wherever its checkpoint was."""
    monkeypatch.setattr(reproduce, "TABLES_DIR", tmp_path / "tables")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "t.yaml").write_text(
        "runs: {a: [experiment=debug], e: {evaluate: a, overrides: [algorithm.sampler.sampling_steps=3]}}\n"
        "rows: [{label: a, run: a, metric: val/loss}, {label: e, run: e, metric: val/loss}]\n"
    )
    table = reproduce.load_table("t")
    assert table.sources == {"e": "a"} and table.runs["e"] == ["experiment=debug", "algorithm.sampler.sampling_steps=3"]
    out, records = tmp_path / "out", tmp_path / "records"
    hand_run(reproduce.record_dir(records, "t", "a", 0), ["experiment=debug", "seed=0"], 0.25)  # a record, no ckpt
    ran: list[list[str]] = []
    real_run = reproduce.subprocess.run

    def fake_run(cmd: list[str], **kwargs: object) -> object:  # stands in for the Hydra multiruns
        if cmd[0] == "git":  # experiments.run's own git query goes through
            return real_run(cmd, **kwargs)
        ran.append(cmd)
        run = Path(next(c for c in cmd if c.startswith("hydra.sweep.dir=")).split("=", 1)[1]).name
        folder = out / run / "seed_0"
        hand_run(folder, [c for c in cmd[3:] if not c.startswith(("hydra.", "cluster=", "seed="))], 0.5)
        if run == "a":
            (folder / "checkpoints").mkdir()
            (folder / "checkpoints" / "last.ckpt").write_bytes(b"weights")
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(reproduce.subprocess, "run", fake_run)
    args = ["t", "--seeds", "0", "--out", str(out), "--records", str(records)]
    markdown = reproduce.main(args)
    assert [Path(c[-2].split("=", 1)[1]).name for c in ran] == ["a", "e"]  # the source first, though recorded
    assert "tasks=[validation]" in ran[1] and f"load={out}/a/seed_${{seed}}/checkpoints/last.ckpt" in ran[1]
    assert "| a | 0.5 |" in markdown and "the record" not in markdown  # collected from the new run, not the record
    # a record of the evaluation made elsewhere stands in (its load path differs); another sampler setting does not
    elsewhere = ["experiment=debug", "algorithm.sampler.sampling_steps=3", "tasks=[validation]", "seed=1",
                 "load=/other/machine/a/seed_1/checkpoints/last.ckpt"]  # fmt: skip
    hand_run(reproduce.record_dir(records, "t", "e", 1), elsewhere)
    assert reproduce.locate(table, out, records, "e", 1, [])[0] == reproduce.record_dir(records, "t", "e", 1)
    changed = [o.replace("steps=3", "steps=5").replace("seed=1", "seed=9") for o in elsewhere]
    hand_run(reproduce.record_dir(records, "t", "e", 9), changed)
    assert reproduce.locate(table, out, records, "e", 9, [])[1] == ["algorithm.sampler.sampling_steps: 5 != 3"]
    # the source finished under --out but its checkpoint is gone: named, nothing trained over it
    (out / "e" / "seed_0" / "metrics.json").unlink()
    (out / "a" / "seed_0" / "checkpoints" / "last.ckpt").unlink()
    ran.clear()
    with pytest.raises(SystemExit):
        reproduce.main(args)
    assert "last.ckpt, which is missing although run 'a' finished there; delete" in capsys.readouterr().err
    assert not ran
    # --runs e keeps its source a for the checkpoint, and reports e's rows only
    assert sorted(reproduce.select_runs(table, "e").runs) == ["a", "e"]
    assert [r.run for r in reproduce.select_runs(table, "e").rows] == ["e"]
    bad = {
        "e: {evaluate: nope}": "must be {evaluate: <a trained run",
        "e: {evaluate: a, overrides: [load=x.ckpt]}": "must not set load",
        "f: {evaluate: a}\n  e: {evaluate: f}": "must be {evaluate: <a trained run",
    }
    for runs, message in bad.items():
        (tmp_path / "tables" / "t.yaml").write_text(
            f"runs:\n  a: [experiment=debug]\n  {runs}\nrows: [{{label: a, run: a, metric: val/loss}}]\n"
        )
        with pytest.raises(reproduce.TableError, match=message.replace("[", r"\[").replace("{", r"\{")):
            reproduce.load_table("t")


def test_summary_statistics_against_their_definitions() -> None:
    stats = reproduce.summarise([1.0, 2.0, 6.0])
    assert stats["mean"] == pytest.approx(3.0)
    assert stats["std"] == pytest.approx(math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2))
    assert stats["ci95"] == pytest.approx(4.302652729911275 * stats["std"] / math.sqrt(3))  # t_{0.975, 2}
    assert math.isnan(reproduce.summarise([5.0])["ci95"])


def test_bad_tables_and_missing_runs_get_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(reproduce.TableError, match="no table 'nope'.*debug"):
        reproduce.load_table("nope")
    monkeypatch.setattr(reproduce, "TABLES_DIR", tmp_path)
    (tmp_path / "t.yaml").write_text("runs: {a: [experiment=debug]}\nrows: [{label: x, run: b, metric: val/loss}]\n")
    with pytest.raises(reproduce.TableError, match=r"rows\[0\].run 'b' is not one of the runs"):
        reproduce.load_table("t")
    (tmp_path / "t.yaml").write_text("runs: {a: [experiment=debug, seed=3]}\nrows: [{label: x, run: a, metric: m}]\n")
    with pytest.raises(reproduce.TableError, match="must not set seed"):
        reproduce.load_table("t")
    (tmp_path / "t.yaml").write_text("runs: {a: [experiment=debug]}\nrows: [{label: x, run: a, metric: val/loss}]\n")
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main(["t", "--seeds", "0", "--out", str(tmp_path / "o"), "--collect"])
    assert exit_info.value.code == 2
    table = reproduce.load_table("t")
    with pytest.raises(reproduce.TableError, match="metrics.json is missing"):
        reproduce.collect(table, [0], tmp_path / "o", {"a": "cmd"})
    assert not reproduce.finished(tmp_path / "o", "a", 0)
    bare = finished_run(tmp_path / "bare", ["main.py", "experiment=debug"], 0.5)  # no config.yaml: cannot be checked
    with pytest.raises(reproduce.TableError, match=r"has no config\.yaml: a record needs all of"):
        reproduce.write_record(bare, tmp_path / "records" / "t" / "a" / "seed_0")
    assert not (tmp_path / "records").exists()


def test_every_shipped_table_loads_and_its_runs_compose() -> None:
    from hydra import compose, initialize_config_dir

    names = reproduce.available_tables()
    assert {"debug", "maze2d_umaze_cpu", "maze2d_umaze_multi_cpu", "maze2d_medium_cpu", "compositional",
            "ts_exchange_cpu", "ts_etth1_cpu", "video_maze_cpu", "robot_swap_state_cpu",
            "robot_swap_cpu"} <= set(names)  # fmt: skip
    with initialize_config_dir(config_dir=str(reproduce.PROJECT_ROOT / "configurations"), version_base="1.3"):
        for name in names:
            table = reproduce.load_table(name)
            assert table.rows and table.seeds
            for run, overrides in table.runs.items():
                cfg = compose(config_name="config", overrides=[*overrides, "output_dir=/tmp/df-table-check"])
                assert cfg.name, (name, run)  # a preset or key that does not exist fails to compose


def test_every_shipped_record_still_stands_for_its_table(tmp_path: Path) -> None:
    """Each record in ``records/`` was made with the configuration its table run composes to today (a record that no
    longer does is stale, and the table's command would train that seed again), so adding a configuration key must
    come with its old behaviour in ``LATER_KEYS``. The key added last is checked both ways: a record without it
    stands for the table run with its old value, and not for one with another value."""
    records = reproduce.RECORDS_DIR
    checked = 0
    for folder in sorted(records.glob("*/*/seed_*")):
        name, run, seed = folder.parent.parent.name, folder.parent.name, int(folder.name.removeprefix("seed_"))
        table = reproduce.load_table(name)
        assert run in table.runs, f"{folder}: the table {name} has no run {run!r}"
        found, stale = reproduce.locate(table, tmp_path / "out", records, run, seed, [])
        assert found == folder and not stale, f"{folder} is stale: {stale}"
        checked += 1
    assert checked >= 70
    table, folder = reproduce.load_table("robot_swap_cpu"), records / "robot_swap_cpu" / "xtf_occlusion" / "seed_0"
    assert "surprise_commit" not in (folder / "config.yaml").read_text()  # made before the key existed
    overrides = reproduce.run_overrides(table, "xtf_occlusion", tmp_path / "out", [])
    ignore = reproduce.ignored(table, "xtf_occlusion")
    assert reproduce.config_differences(folder, overrides, 0, ignore) == []
    assert reproduce.config_differences(folder, [*overrides, "evaluator.surprise_commit=imputed"], 0, ignore) == [
        "evaluator.surprise_commit: 'flagged' != 'imputed'"
    ]

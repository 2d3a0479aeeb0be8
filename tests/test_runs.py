"""Training scaffolding (astrotf.runs): run folder, run.json, history, NaN check, Ctrl-C, provenance."""

import json
from pathlib import Path

import pytest

from astrotf import checkpoints, runs
from astrotf.errors import AstroTFError


def test_history_has_one_header_and_a_row_per_call(tmp_path):
    path = tmp_path / "history.csv"
    runs.append_history(path, {"epoch": 1, "loss": 0.5})
    runs.append_history(path, {"epoch": 2, "loss": 0.25})
    assert path.read_text().splitlines() == ["epoch,loss", "1,0.5", "2,0.25"]


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_loss_stops_with_the_step_and_a_hint(loss):
    with pytest.raises(AstroTFError, match=r"runs/x: loss became .* at step 7; lower --lr"):
        runs.check_finite_loss(loss, 7, "runs/x", "lower --lr")


def test_finite_loss_passes():
    runs.check_finite_loss(0.1, 1, "runs/x", "lower --lr")


def test_run_record_refuses_a_run_with_a_checkpoint_and_resumes_it(tmp_path):
    with pytest.raises(AstroTFError, match="not a training run"):
        runs.load_run(tmp_path)
    runs.atomic_json(tmp_path / runs.RUN_FILE, {"step": 3})
    (tmp_path / "checkpoints").mkdir()
    for name in ("ckpt-3.index", "ckpt-3.data-00000-of-00001"):
        (tmp_path / "checkpoints" / name).write_bytes(b"")
    with pytest.raises(AstroTFError, match="already holds a training run; pass --resume"):
        runs.RunRecord(tmp_path, resume=False)
    assert runs.RunRecord(tmp_path, resume=True).state == {"step": 3}
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write leaves no temporary file


def test_a_run_killed_before_its_first_checkpoint_resumes_or_restarts_from_step_0(tmp_path, caplog):
    import tensorflow as tf

    first = runs.RunRecord(tmp_path / "run", resume=True)  # nothing there yet: a new run, with a logged line
    assert not first.resume and "no run to resume" in caplog.text
    first.begin(recipe={"a": 1}, data={"data_dir": "d"})  # killed from here on: run.json says what the run is
    assert runs.load_run(tmp_path / "run")["status"] == "starting"
    resumed = runs.RunRecord(tmp_path / "run", resume=True)
    assert resumed.state["recipe"] == {"a": 1} and resumed.resume_checkpoint() is None
    counter = tf.Variable(7)
    resumed.attach(counter=counter)
    assert int(counter.numpy()) == 7 and "no checkpoint yet; starting from step 0" in caplog.text
    again = runs.RunRecord(tmp_path / "run", resume=False)  # a plain restart is allowed too
    assert again.state == {} and "stopped before its first checkpoint" in caplog.text


def _saved_steps(tmp_path, steps):
    import tensorflow as tf

    record = runs.RunRecord(tmp_path, resume=False)
    counter = tf.Variable(0)
    record.attach(counter=counter)
    record.start()
    for step in steps:
        counter.assign(step)
        record.save("running", step)
    return tmp_path / "checkpoints"


def test_checkpoints_are_complete_kept_three_and_readable_by_tensorflow(tmp_path):
    import tensorflow as tf

    folder = _saved_steps(tmp_path, [1, 2, 3, 4])
    assert [p.name for p in checkpoints.complete_checkpoints(folder)] == ["ckpt-4", "ckpt-3", "ckpt-2"]
    assert tf.train.latest_checkpoint(folder).endswith("ckpt-4")
    assert tf.train.get_checkpoint_state(folder).all_model_checkpoint_paths[0].endswith("ckpt-2")
    assert not list(folder.glob(".*"))  # no staging folder or temporary state file left


def test_a_checkpoint_killed_before_the_state_file_is_still_resumed(tmp_path):
    import tensorflow as tf

    folder = _saved_steps(tmp_path, [1, 2])
    checkpoints.write_state(folder, [folder / "ckpt-1"])  # as if killed after the shards, before the state
    (folder / ".ckpt-3.partial").mkdir()  # and one killed while writing its shards
    counter = tf.Variable(0)
    record = runs.RunRecord(tmp_path, resume=True)
    record.attach(counter=counter)
    assert int(counter.numpy()) == 2 and not (folder / ".ckpt-3.partial").exists()


def test_a_step_killed_while_replacing_its_checkpoint_resumes_from_the_staged_one(tmp_path):
    import tensorflow as tf

    folder = _saved_steps(tmp_path, [1, 2])
    counter = tf.Variable(22)  # the same step saved again (end of the epoch) with new counters
    staged = tf.train.Checkpoint(counter=counter)
    staged.save_counter.assign_add(1)  # as checkpoints.write does
    staged.write(str(folder / ".ckpt-2.partial" / "ckpt"))
    checkpoints.remove(folder / "ckpt-2")  # killed after the old files went, before the new came in
    counter.assign(0)
    runs.RunRecord(tmp_path, resume=True).attach(counter=counter)
    assert int(counter.numpy()) == 22 and not (folder / ".ckpt-2.partial").exists()


@pytest.mark.parametrize("damage", ["truncated index", "missing shard", "truncated shard"])
def test_a_damaged_checkpoint_is_never_restored_the_previous_one_is(tmp_path, caplog, damage):
    import tensorflow as tf

    folder = _saved_steps(tmp_path, [1, 2])
    if damage == "truncated index":
        index = folder / "ckpt-2.index"
        index.write_bytes(index.read_bytes()[:20])
    elif damage == "missing shard":
        (folder / "ckpt-2.data-00000-of-00001").unlink()
    else:
        shard = folder / "ckpt-2.data-00000-of-00001"
        shard.write_bytes(shard.read_bytes()[:-4])
    counter = tf.Variable(0)
    runs.RunRecord(tmp_path, resume=True).attach(counter=counter)
    assert int(counter.numpy()) == 1
    if damage != "missing shard":  # an incomplete one is not even a candidate
        assert "ckpt-2: checkpoint is damaged" in caplog.text and "falling back to the previous one" in caplog.text
    assert [p.name for p in checkpoints.complete_checkpoints(folder)] == ["ckpt-1"]


def test_history_rows_past_the_resumed_checkpoint_and_a_torn_line_are_dropped(tmp_path):
    path = tmp_path / "history.csv"
    for epoch in (1, 2, 3):
        runs.append_history(path, {"epoch": epoch, "loss": 0.5})
    path.write_text(path.read_text() + "4,0.")
    runs.trim_history(path, "epoch", 2)
    assert path.read_text().splitlines() == ["epoch,loss", "1,0.5", "2,0.5"]
    runs.append_history(path, {"epoch": 3})  # a row without every column keeps the header's order
    assert path.read_text().splitlines()[-1] == "3,"
    runs.trim_history(path, "epoch", 0)
    assert not path.exists()


def test_save_model_replaces_the_file_at_once(tmp_path):
    class Model:
        def save(self, path):
            path.write_text("new")

    target = tmp_path / "model_last.keras"
    target.write_text("old")
    runs.save_model(Model(), target)
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["model_last.keras"]


def test_run_record_saves_checkpoint_and_run_json(tmp_path):
    import tensorflow as tf

    record = runs.RunRecord(tmp_path / "run", resume=False)
    counter = tf.Variable(5)
    record.attach(counter=counter)
    record.start(recipe={"a": 1})
    record.save("running", 5, epoch=1)
    state = json.loads((tmp_path / "run" / runs.RUN_FILE).read_text())
    assert state["status"] == "running" and state["step"] == 5 and state["epoch"] == 1 and state["recipe"] == {"a": 1}
    assert "cpu_cores" in state["hardware"] and state["wall_time_s"] >= 0
    counter.assign(0)
    resumed = runs.RunRecord(tmp_path / "run", resume=True)
    resumed.attach(counter=counter)
    assert int(counter.numpy()) == 5
    resumed.start(recipe={"a": 1})
    err = resumed.interrupted(5, "astrotf train resunet")
    assert isinstance(err, runs.TrainingInterrupted) and "--resume" in str(err)


def test_worker_task_reads_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert runs.worker_task() == (True, 0)
    cluster = {"worker": ["a:1", "b:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert runs.worker_task() == (False, 1)
    monkeypatch.setenv("TF_CONFIG", "{")
    with pytest.raises(AstroTFError, match="TF_CONFIG"):
        runs.worker_task()


def test_folder_provenance_names_manifest_and_credits(tmp_path):
    (tmp_path / "CREDITS.json").write_text("{}")
    info = runs.folder_provenance(tmp_path, ["a", "b"])
    assert info == {"data_dir": str(tmp_path), "n_images": 2, "images": ["a", "b"], "credits": "CREDITS.json"}


def test_init_model_file_finds_the_keras_file_of_a_folder_or_run(tmp_path):
    (tmp_path / "model_best.keras").write_bytes(b"")
    assert runs.init_model_file(tmp_path) == tmp_path / "model_best.keras"
    with pytest.raises(AstroTFError, match="no model to start from"):
        runs.init_model_file(tmp_path / "missing")


def test_ctrl_c_is_deferred_to_the_next_step_and_a_second_one_stops_at_once():
    """The first SIGINT only sets a flag (no KeyboardInterrupt inside TensorFlow); the second raises."""
    import os
    import signal

    from astrotf.runs import deferred_interrupt

    before = signal.getsignal(signal.SIGINT)
    with deferred_interrupt() as stop_requested:
        assert not stop_requested()
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between bytecodes
            if stop_requested():
                break
        assert stop_requested()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc (Linux)")
def test_checkpoint_files_reach_the_disk_before_they_are_renamed_into_place(tmp_path, monkeypatch):
    import os

    import tensorflow as tf

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a))), real_replace(a, b))[1])
    ckpt = tf.train.Checkpoint(v=tf.Variable(3.0))
    prefix = checkpoints.write(ckpt, tmp_path / "checkpoints", 7)
    synced = [p for kind, p in events if kind == "fsync"]
    for kind, path in events:
        if kind == "replace" and ".ckpt-7.partial" in path:
            assert path in synced[: synced.index(str(tmp_path / "checkpoints"))]  # flushed before any rename
    assert synced.count(str(tmp_path / "checkpoints")) >= 2  # the folder after the files and after the state
    assert prefix.with_name("ckpt-7.index").exists()

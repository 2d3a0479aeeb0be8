"""Training scaffolding (astrotf.runs): run folder, run.json, history, NaN check, Ctrl-C, provenance."""

import json

import pytest

from astrotf import runs
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


def test_run_record_refuses_an_existing_run_and_resume_needs_one(tmp_path):
    with pytest.raises(AstroTFError, match="not a training run"):
        runs.RunRecord(tmp_path, resume=True)
    runs.atomic_json(tmp_path / runs.RUN_FILE, {"step": 3})
    with pytest.raises(AstroTFError, match="already holds a training run; pass --resume"):
        runs.RunRecord(tmp_path, resume=False)
    assert runs.RunRecord(tmp_path, resume=True).state == {"step": 3}
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write leaves no temporary file


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

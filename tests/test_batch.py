"""Many files (astrotf.batch): output paths, shards, list files, the manifest, skip-existing, per-file errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from astrotf import batch
from astrotf.backends import LoadedModel
from astrotf.errors import AstroTFError
from astrotf.restore import RestoreOptions
from tests.test_infer_cli import invoke, models  # noqa: F401  (models: a module fixture)


def test_output_path_beside_the_input_in_a_folder_or_as_given():
    assert batch.output_path(Path("d/m31.fits.gz")) == Path("d/m31_denoised.fits.gz")
    assert batch.output_path(Path("d/M31.TIF"), out_dir=Path("out")) == Path("out/M31_denoised.TIF")
    assert batch.output_path(Path("d/m31.png"), output=Path("x.png"), out_dir=Path("out")) == Path("x.png")


@pytest.mark.parametrize("value,expected", [(None, None), ("0/4", (0, 4)), ("3/4", (3, 4))])
def test_shards_parse(value, expected):
    assert batch.parse_shard(value) == expected


@pytest.mark.parametrize("value", ["4/4", "-1/2", "x", "1/0", "1/2/3"])
def test_bad_shards_are_named(value):
    with pytest.raises(AstroTFError, match="--shard"):
        batch.parse_shard(value)


def test_inputs_from_arguments_and_a_list_deduplicated_then_sharded(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# frames\nc.fits\n\n  b.fits  \na.fits\n")
    paths = batch.collect_inputs([Path("a.fits"), Path("d.fits")], listing)
    assert paths == [Path("a.fits"), Path("d.fits"), Path("c.fits"), Path("b.fits")]
    shares = [batch.collect_inputs([Path("a.fits"), Path("d.fits")], listing, (i, 2)) for i in range(2)]
    assert shares == [[Path("a.fits"), Path("c.fits")], [Path("b.fits"), Path("d.fits")]]
    with pytest.raises(AstroTFError, match="no input images"):
        batch.collect_inputs([], None)


@pytest.mark.parametrize("args,message", [
    ((2, Path("o.fits"), None, False, False), "takes one input"),
    ((1, Path("o.fits"), Path("d"), False, False), "not both"),
    ((1, None, None, True, True), "--skip-existing or --force"),
])
def test_output_options_that_cannot_go_together(args, message):
    with pytest.raises(AstroTFError, match=message):
        batch.check_outputs(*args)


def test_manifest_appends_one_json_line_per_record(tmp_path):
    path = tmp_path / "logs" / "m.jsonl"
    for status in ("ok", "error"):
        log = batch.Manifest(path)
        log.write(input=Path("a.fits"), status=status)
        log.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "error"] and records[0]["input"] == "a.fits"
    assert all("time" in r for r in records)
    batch.Manifest(None).write(status="ok")  # no path: nothing written, no error


@pytest.mark.parametrize("failures,total,status", [(0, 3, 0), (1, 3, 1), (3, 3, 1), (1, 1, 2)])
def test_exit_status(failures, total, status):
    assert batch.BatchResult(total, ("error",) * failures).exit_status == status


def halve(batch_):
    return batch_ * 0.5


def test_denoise_file_with_a_given_model_writes_its_history(tmp_path):
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, np.full((40, 40, 3), 100, np.uint8), photometric="rgb")
    model = LoadedModel("halve", halve, {"channels": 3, "data_domain": "stretched"})
    echoed = []
    done = batch.denoise_file(src, tmp_path / "out" / "a.tif", batch.InferOptions(model="halve", tile=32),
                              model, create_folder=True, echo=lambda message, err=False: echoed.append(message))
    assert done == batch.Denoised(tmp_path / "out" / "a.tif", "halve", (40, 40, 3))
    np.testing.assert_array_equal(tifffile.imread(done.output), np.full((40, 40, 3), 50, np.uint8))
    assert echoed == []  # the model was named: no line saying which one was chosen


def test_run_goes_on_past_a_bad_file_and_logs_every_input(tmp_path, monkeypatch):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    bad = tmp_path / "broken.fits"
    bad.write_bytes(b"not a fits file at all")
    monkeypatch.setattr(batch, "_load", lambda name, options, domain: LoadedModel(name, halve, {"channels": 3}))
    echoed = []
    result = batch.run([bad, good], batch.InferOptions(model="any", tile=32), out_dir=tmp_path / "out",
                       echo=lambda message, err=False: echoed.append(message))
    assert result.exit_status == 1 and len(result.failures) == 1 and "broken.fits" in result.failures[0]
    assert (tmp_path / "out" / "good_denoised.tif").exists()
    records = [json.loads(line) for line in (tmp_path / "out" / "astrotf-manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["error", "ok"] and records[1]["model"] == "any"
    assert "1 of 2 image(s) failed:" in echoed
    again = batch.run([good], batch.InferOptions(model="any", tile=32), out_dir=tmp_path / "out",
                      skip_existing=True, echo=lambda message, err=False: echoed.append(message))
    assert again.skipped == 1 and again.exit_status == 0


def test_an_unexpected_exception_or_memory_error_is_one_line_and_the_batch_goes_on(tmp_path, monkeypatch):
    images = []
    for name in ("a", "b", "c"):
        images.append(tmp_path / f"{name}.tif")
        tifffile.imwrite(images[-1], np.zeros((32, 32, 3), np.uint8), photometric="rgb")

    def flaky(batch_):
        flaky.calls += 1
        if flaky.calls == 1:
            raise RuntimeError("device lost\nsecond line")
        if flaky.calls == 2:
            raise MemoryError
        return batch_

    flaky.calls = 0
    monkeypatch.setattr(batch, "_load", lambda name, options, domain: LoadedModel(name, flaky, {"channels": 3}))
    echoed = []
    result = batch.run(images, batch.InferOptions(model="any", tile=32, batch_size=4), out_dir=tmp_path / "out",
                       echo=lambda message, err=False: echoed.append(message))
    assert result.exit_status == 1 and len(result.failures) == 2
    assert result.failures[0] == f"{images[0]}: unexpected RuntimeError: device lost (run with -vv for the traceback)"
    assert "--tile or --batch-size" in result.failures[1] and str(images[1]) in result.failures[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["astrotf-manifest.jsonl", "c_denoised.tif"]
    records = [json.loads(line) for line in (tmp_path / "out" / "astrotf-manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["error", "error", "ok"]


def test_the_manifest_is_closed_when_the_batch_is_interrupted(tmp_path, monkeypatch):
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    closed = []
    monkeypatch.setattr(batch.Manifest, "close", lambda self: closed.append(True))

    def interrupted(batch_):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "_load", lambda name, options, domain: LoadedModel(name, interrupted, {"channels": 3}))
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C still stops the batch, with the manifest closed
        batch.run([image], batch.InferOptions(model="any", tile=32), out_dir=tmp_path / "out")
    assert closed == [True]


def test_a_restore_into_jpeg_fails_before_the_network_runs(tmp_path):
    import cv2

    src = tmp_path / "a.png"
    cv2.imwrite(str(src), np.zeros((32, 32), np.uint8))

    def never(batch_):
        raise AssertionError("the network ran")

    options = batch.InferOptions(restore=RestoreOptions(threshold=0.1))
    with pytest.raises(AstroTFError, match="JPEG is lossy"):
        batch.denoise_file(src, tmp_path / "a.jpg", options, LoadedModel("never", never, {"channels": 1}))


# ----------------------------------------------------------------------------- from the command line
def test_existing_output_needs_force_and_input_is_never_overwritten(tmp_path, models):
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, np.zeros((32, 32), np.uint8))
    assert invoke(src, "--model", models["rgb"]).exit_code == 0
    again = invoke(src, "--model", models["rgb"])
    assert again.exit_code != 0 and "--force" in again.output
    assert invoke(src, "--model", models["rgb"], "--force").exit_code == 0
    same = invoke(src, "--model", models["rgb"], "-o", src)
    assert same.exit_code != 0 and "overwrite the input" in same.output


def test_bad_file_is_reported_and_the_others_go_on(tmp_path, models):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    bad = tmp_path / "broken.fits"
    bad.write_bytes(b"not a fits file at all")
    result = invoke(bad, good, "--model", models["rgb"])
    assert result.exit_code == 1
    assert (tmp_path / "good_denoised.tif").exists()
    assert "broken.fits" in result.output and "1 of 2 image(s) failed" in result.output
    assert "Traceback" not in result.output


def test_archive_batch_resumes_logs_a_manifest_and_shards(tmp_path, models):
    inputs = []
    for i in range(5):
        src = tmp_path / "in" / f"frame{i}.tif"
        src.parent.mkdir(exist_ok=True)
        tifffile.imwrite(src, np.full((32, 32, 3), 40 * i, np.uint8), photometric="rgb")
        inputs.append(src)
    (tmp_path / "in" / "frame3.tif").write_bytes(b"truncated")  # one bad file in the archive
    listing = tmp_path / "list.txt"
    listing.write_text("# archive\n" + "\n".join(map(str, inputs)) + "\n")
    out = tmp_path / "out"
    # shard 0/2 of the sorted list: frames 0, 2, 4
    first = invoke("--from-list", listing, "--out-dir", out, "--shard", "0/2", "--model", models["rgb"])
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in out.glob("*.tif")) == ["frame0_denoised.tif", "frame2_denoised.tif",
                                                         "frame4_denoised.tif"]
    # the whole list again, resuming: done outputs are skipped, the bad file is reported
    again = invoke("--from-list", listing, "--out-dir", out, "--skip-existing", "--model", models["rgb"])
    assert again.exit_code == 1 and "3 of 5 image(s) skipped" in again.output
    assert (out / "frame1_denoised.tif").exists() and not (out / "frame3_denoised.tif").exists()
    records = [json.loads(line) for line in (out / "astrotf-manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok"] * 3 + ["skipped", "ok", "skipped", "error", "skipped"]
    error = records[6]
    assert error["input"].endswith("frame3.tif") and "frame3.tif" in error["error"]
    assert all(r["seconds"] >= 0 for r in records if r["status"] == "ok")


def test_temporary_files_of_killed_processes_on_this_machine_are_removed_by_the_next_batch(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from astrotf import io

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = io._owner().rsplit("-", 1)[0]
    out = tmp_path / "out"
    out.mkdir()
    names = {"dead": f".a_denoised.tmp-{host}-{dead.pid}-0123abcd.tif",
             "running": f".b_denoised.tmp-{host}-{os.getpid()}-0123abcd.tif",
             "elsewhere": f".c_denoised.tmp-otherhost-{dead.pid}-0123abcd.tif"}
    for name in names.values():
        (out / name).write_bytes(b"half")
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    monkeypatch.setattr(batch, "_load", lambda name, options, domain: LoadedModel(name, halve, {"channels": 3}))
    assert batch.run([src], batch.InferOptions(model="any", tile=32), out_dir=out).exit_status == 0
    left = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert left == sorted([names["running"], names["elsewhere"]])


def test_a_model_with_a_calibrated_default_strength_is_blended_unless_told_otherwise():
    from astrotf.batch import InferOptions, denoise_frame

    flat = LoadedModel("flat", lambda tiles: np.full_like(tiles, 100.0),
                       {"channels": 1, "data_domain": "linear", "default_strength": 0.75})
    data = np.random.default_rng(0).normal(100.0, 10.0, (40, 40, 1)).astype(np.float32)
    frame = denoise_frame(data, InferOptions(tile=32), domain="linear", model=flat, step=None)
    np.testing.assert_allclose(frame.data, 0.75 * 100.0 + 0.25 * data, rtol=1e-6)
    assert any("strength 0.75" in line for line in frame.history)
    told = denoise_frame(data, InferOptions(tile=32, restore=RestoreOptions(strength=1.0)), domain="linear",
                         model=flat, step=None)
    np.testing.assert_allclose(told.data, 100.0)
    plain = LoadedModel("plain", lambda tiles: np.full_like(tiles, 100.0), {"channels": 1, "data_domain": "linear"})
    np.testing.assert_allclose(denoise_frame(data, InferOptions(tile=32), domain="linear", model=plain,
                                             step=None).data, 100.0)

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from subpixel.errors import ImageError, SubpixelError
from subpixel.pipeline.batch import (
    BatchInterrupted,
    Job,
    collect_inputs,
    parse_shard,
    pending_jobs,
    plan_jobs,
    run_jobs,
    shard,
)
from subpixel.signals import Interrupted


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folders_globs_and_recursion(tmp_path: Path) -> None:
    a = _touch(tmp_path / "in" / "a.png")
    b = _touch(tmp_path / "in" / "sub" / "b.jpg")
    _touch(tmp_path / "in" / "notes.txt")
    assert [s for s, _ in collect_inputs([str(tmp_path / "in")])] == [a]
    assert [s for s, _ in collect_inputs([str(tmp_path / "in")], recursive=True)] == [a, b]
    assert [s for s, _ in collect_inputs([str(tmp_path / "in" / "*.png")])] == [a]
    # The same file twice is processed once.
    assert len(collect_inputs([str(a), str(tmp_path / "in")])) == 1
    with pytest.raises(ImageError, match="no images"):
        collect_inputs([str(tmp_path / "in" / "*.bmp")])


def test_output_is_a_file_for_one_input_and_a_mirrored_folder_otherwise(tmp_path: Path) -> None:
    a = _touch(tmp_path / "in" / "a.png")
    _touch(tmp_path / "in" / "sub" / "b.jpg")
    [job] = plan_jobs([str(a)], tmp_path / "out.png")
    assert job.target == tmp_path / "out.png"
    jobs = plan_jobs([str(tmp_path / "in")], tmp_path / "out", recursive=True, extension=".webp")
    assert [j.target for j in jobs] == [
        tmp_path / "out" / "a.webp",
        tmp_path / "out" / "sub" / "b.webp",
    ]
    assert [j.key for j in jobs] == ["a.png", "sub/b.jpg"]
    (tmp_path / "outdir").mkdir()
    [job] = plan_jobs([str(a)], tmp_path / "outdir")
    assert job.target == tmp_path / "outdir" / "a.png"
    with pytest.raises(ImageError, match="overwrite the input"):
        plan_jobs([str(a)], a)


def test_shards_partition_the_jobs_stably(tmp_path: Path) -> None:
    jobs = [Job(Path(f"{i}.png"), Path(f"o/{i}.png"), f"{i}.png") for i in range(200)]
    parts = [shard(jobs, k, 4) for k in range(1, 5)]
    assert sorted(j.key for part in parts for j in part) == sorted(j.key for j in jobs)
    assert all(20 < len(part) < 80 for part in parts)
    # Adding files does not move existing ones between shards.
    more = [*jobs, Job(Path("new.png"), Path("o/new.png"), "new.png")]
    assert set(shard(jobs, 2, 4)) <= set(shard(more, 2, 4))
    assert parse_shard("3/8") == (3, 8)
    for bad in ("0/4", "5/4", "x", "1/2/3"):
        with pytest.raises(SubpixelError):
            parse_shard(bad)


def test_run_jobs_skips_existing_outputs_and_goes_on_after_failures(tmp_path: Path) -> None:
    jobs = [Job(tmp_path / f"{n}.png", tmp_path / "out" / f"{n}.png", n) for n in "abc"]
    _touch(tmp_path / "out" / "a.png")
    seen = []

    def process(job: Job) -> None:
        seen.append(job.key)
        if job.key == "b":
            raise ImageError("b is broken")
        job.target.write_bytes(b"done")

    summary = run_jobs(jobs, process)
    assert seen == ["b", "c"]
    assert summary.skipped == [tmp_path / "out" / "a.png"]
    assert summary.failed == [(tmp_path / "b.png", f"{tmp_path / 'b.png'}: b is broken")]
    assert summary.written == [tmp_path / "out" / "c.png"]
    assert summary.line() == "1 written, 1 skipped (output exists), 1 failed"
    again = run_jobs(jobs, process, overwrite=True)
    assert len(again.written) == 2


def test_any_exception_from_one_job_is_that_files_one_line_error(tmp_path: Path) -> None:
    jobs = [Job(tmp_path / f"{n}.png", tmp_path / "out" / f"{n}.png", n) for n in "abc"]
    reported = []

    def process(job: Job) -> None:
        if job.key == "a":
            raise RuntimeError("Failed to decode frame 0: Decoding of color planes failed\nmore")
        if job.key == "b":
            raise SyntaxError("not a TIFF file")
        job.target.write_bytes(b"done")

    summary = run_jobs(jobs, process, on_error=lambda job, reason: reported.append(reason))
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert summary.failed == [
        (a, f"{a}: RuntimeError: Failed to decode frame 0: Decoding of color planes failed"),
        (b, f"{b}: SyntaxError: not a TIFF file"),
    ]
    assert reported == [reason for _, reason in summary.failed]
    assert summary.written == [tmp_path / "out" / "c.png"]


def test_two_inputs_for_one_output_are_refused_before_any_work(tmp_path: Path) -> None:
    x_png = _touch(tmp_path / "in" / "x.png")
    x_jpg = _touch(tmp_path / "in" / "x.jpg")
    with pytest.raises(ImageError) as error:
        plan_jobs([str(tmp_path / "in")], tmp_path / "out", extension=".jpg")
    assert str(error.value) == (
        f"{x_jpg} and {x_png} would both be written to {tmp_path / 'out' / 'x.jpg'}; "
        "rename one or upscale them into different folders"
    )
    # Two folders with a file of the same name collide too.
    _touch(tmp_path / "other" / "x.png")
    with pytest.raises(ImageError, match="would both be written to"):
        plan_jobs([str(x_png), str(tmp_path / "other" / "x.png")], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # Without --format they do not collide.
    assert len(plan_jobs([str(tmp_path / "in")], tmp_path / "out")) == 2


def test_an_output_that_would_replace_another_input_is_refused(tmp_path: Path) -> None:
    _touch(tmp_path / "in" / "sub" / "y.png")  # -> out/sub/y.png, which is the other input
    other = _touch(tmp_path / "out" / "sub" / "y.png")  # -> out/y.png
    with pytest.raises(ImageError) as error:
        plan_jobs([str(tmp_path / "in"), str(other)], tmp_path / "out", recursive=True)
    assert str(error.value) == f"refusing to overwrite the input {other}"


def test_a_file_like_output_for_several_inputs_is_refused(tmp_path: Path) -> None:
    a = _touch(tmp_path / "in" / "a.png")
    b = _touch(tmp_path / "in" / "b.png")
    with pytest.raises(ImageError) as error:
        plan_jobs([str(a), str(b)], tmp_path / "two.png")
    assert str(error.value) == (
        f"-o {tmp_path / 'two.png'} looks like a file but 2 inputs were given; give a folder"
    )
    with pytest.raises(ImageError, match="in is a folder; give a folder"):
        plan_jobs([str(tmp_path / "in")], tmp_path / "two.png")
    # A folder that happens to be named like a file is a folder.
    (tmp_path / "dir.png").mkdir()
    assert len(plan_jobs([str(a), str(b)], tmp_path / "dir.png")) == 2


def test_urls_are_refused_by_name(tmp_path: Path) -> None:
    for url in ("https://example.com/photo.png", "HTTP://example.com/a.jpg", "s3://b/k.png"):
        with pytest.raises(ImageError) as error:
            collect_inputs([url])
        assert str(error.value) == f"{url}: URLs are not supported; download the file first"


def test_an_unknown_format_is_refused_once_before_any_work(tmp_path: Path) -> None:
    _touch(tmp_path / "in" / "a.png")
    with pytest.raises(ImageError, match="unknown output format 'xyz'"):
        plan_jobs([str(tmp_path / "in")], tmp_path / "out", extension=".xyz")


def test_an_output_folder_that_cannot_be_written_is_refused_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _touch(tmp_path / "in" / "a.png")
    b = _touch(tmp_path / "in" / "b.png")
    blocker = _touch(tmp_path / "file")
    with pytest.raises(ImageError) as error:
        plan_jobs([str(a), str(b)], blocker / "out")
    assert (
        str(error.value) == f"cannot write to {blocker / 'out'}: {blocker} is a file, not a folder"
    )
    # The permission check (as root, os.access says yes to everything; here it says no).
    monkeypatch.setattr("subpixel.pipeline.batch.os.access", lambda path, mode: False)
    with pytest.raises(ImageError) as error:
        plan_jobs([str(a), str(b)], tmp_path / "out" / "sub")
    assert str(error.value) == (
        f"cannot write to {tmp_path / 'out' / 'sub'}: permission denied in {tmp_path}"
    )


def test_every_failure_names_its_file(tmp_path: Path) -> None:
    jobs = [Job(tmp_path / f"{n}.png", tmp_path / "out" / f"{n}.png", n) for n in "ab"]

    def process(job: Job) -> None:
        if job.key == "a":
            raise ImageError("unsupported image mode 'F'")
        raise ImageError(f"cannot decode image {job.source}: broken")

    summary = run_jobs(jobs, process)
    assert summary.failed == [
        (tmp_path / "a.png", f"{tmp_path / 'a.png'}: unsupported image mode 'F'"),
        (tmp_path / "b.png", f"cannot decode image {tmp_path / 'b.png'}: broken"),
    ]


def test_run_jobs_reports_each_failure_as_it_happens(tmp_path: Path) -> None:
    jobs = [Job(tmp_path / f"{n}.png", tmp_path / "out" / f"{n}.png", n) for n in "abc"]
    events = []

    def process(job: Job) -> None:
        events.append(f"process {job.key}")
        if job.key != "c":
            raise ImageError(f"{job.key} is broken")

    run_jobs(jobs, process, on_error=lambda job, reason: events.append(f"error {reason}"))
    assert events == [
        "process a",
        f"error {jobs[0].source}: a is broken",
        "process b",
        f"error {jobs[1].source}: b is broken",
        "process c",
    ]


@pytest.mark.parametrize("where", ["in a job", "between jobs"])
def test_an_interrupted_batch_says_what_was_done(where: str, tmp_path: Path) -> None:
    jobs = [Job(tmp_path / f"{n}.png", tmp_path / "out" / f"{n}.png", n) for n in "abcde"]
    _touch(tmp_path / "out" / "b.png")

    def process(job: Job) -> None:
        if job.key == "c":
            raise ImageError("c is broken")
        if job.key == "d" and where == "in a job":
            raise Interrupted(signal.SIGTERM)
        job.target.write_bytes(b"done")

    def progress(job: Job) -> None:
        if job.key == "d":
            raise KeyboardInterrupt

    with pytest.raises(BatchInterrupted) as stopped:
        run_jobs(jobs, process, progress=progress)
    interruption = stopped.value
    assert isinstance(interruption, KeyboardInterrupt)
    assert interruption.signum == (signal.SIGTERM if where == "in a job" else signal.SIGINT)
    assert interruption.summary.line() == (
        f"{1 if where == 'in a job' else 2} written, 1 skipped (output exists), 1 failed"
    )
    assert interruption.current == (jobs[3] if where == "in a job" else None)
    assert interruption.not_started == 1


def test_pending_jobs_are_those_run_jobs_would_process(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _touch(tmp_path / "in" / f"{name}.png")
    _touch(tmp_path / "out" / "b.png")
    jobs = plan_jobs([str(tmp_path / "in")], tmp_path / "out")
    assert [j.source.name for j in pending_jobs(jobs)] == ["a.png", "c.png"]
    assert pending_jobs(jobs, overwrite=True) == jobs
    processed: list[Job] = []
    run_jobs(jobs, processed.append)
    assert processed == pending_jobs(jobs)

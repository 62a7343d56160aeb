from __future__ import annotations

from pathlib import Path

import pytest

from subpixel.batch import (
    Job,
    collect_inputs,
    parse_shard,
    pending_jobs,
    plan_jobs,
    run_jobs,
    shard,
)
from subpixel.errors import ImageError, SubpixelError


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
    assert summary.failed == [(tmp_path / "b.png", "b is broken")]
    assert summary.written == [tmp_path / "out" / "c.png"]
    assert summary.line() == "1 written, 1 skipped (output exists), 1 failed"
    again = run_jobs(jobs, process, overwrite=True)
    assert len(again.written) == 2


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

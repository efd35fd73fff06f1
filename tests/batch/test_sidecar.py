"""The run's fingerprint (pocketbatch/batch/_sidecar.py; the lock: tests/batch/test_lock.py).

The contract (issue 10): ``--resume`` continues only the same run, i.e. the same flow
and config, and the same input for every record already in the output; whatever
moment a crash stops the writer, the fingerprint beside the output must neither
refuse a resume of unchanged inputs (false mismatch) nor accept one whose inputs
changed under a record already written (false match). One run per output at a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _support import write_lines

from pocketbatch import load_flow
from pocketbatch.batch import _sidecar
from pocketbatch.batch._identity import FlowIdentity
from pocketbatch.batch._jsonl import JsonlWriter, ResumeError, resume_state
from pocketbatch.batch._sidecar import Fingerprint, check_resume, sidecar_path

FLOW = "output: {$input: n}\n"


def identity(text: str = FLOW, **variables: Any) -> FlowIdentity:
    return FlowIdentity.of(load_flow(text, variables=variables))


def no_warning(message: str) -> None:
    raise AssertionError(f"unexpected warning: {message}")


Snapshot = tuple[bytes, bytes]  # (output, fingerprint) as a crash would leave them


def run_protocol(
    out: Path,
    inputs: Path,
    start: int,
    end: int,
    monkeypatch: pytest.MonkeyPatch,
    *,
    batch: int,
    force: bool = False,
) -> list[Snapshot]:
    """Write records ``start..end-1`` as run-batch does (the fingerprint first, then
    each record), returning the files as they are after every single write: the
    states a SIGKILL can leave."""
    states: list[Snapshot] = []
    sidecar = sidecar_path(out)

    def snap() -> None:
        states.append((out.read_bytes(), sidecar.read_bytes()))

    who = identity()
    prefix = check_resume(out, who, inputs, start, force=force, warn=lambda _: None)
    real_pwrite = _sidecar._pwrite

    def pwrite(fd: int, data: bytes, offset: int) -> None:
        real_pwrite(fd, data, offset)
        snap()

    monkeypatch.setattr(_sidecar, "_pwrite", pwrite)
    writer = JsonlWriter(out, append=start > 0)
    fingerprint = Fingerprint.create(out, who, inputs, prefix, batch=batch)
    snap()
    for i in range(start, end):
        fingerprint.before(i)
        writer.write({"index": i, "outcome": "success", "result": i})
        snap()
    fingerprint.close(end)
    writer.close()
    snap()
    monkeypatch.setattr(_sidecar, "_pwrite", real_pwrite)
    return states


def inputs_with(path: Path, n: int, changed: int | None = None) -> Path:
    return write_lines(path, ({"n": i if i != changed else -1} for i in range(n)))


def check_every_state(tmp_path: Path, states: list[Snapshot], n: int) -> set[int]:
    """At each crash state: a resume with the same inputs passes; with any one of
    the inputs already run changed, it is refused; a change after them passes."""
    same = inputs_with(tmp_path / "same.jsonl", n)
    seen: set[int] = set()
    for number, (output, fingerprint) in enumerate(states):
        out = tmp_path / f"crash{number}.jsonl"
        out.write_bytes(output)
        sidecar_path(out).write_bytes(fingerprint)
        done = resume_state(out).done
        seen.add(done)
        assert check_resume(out, identity(), same, done, warn=no_warning).count == done
        for changed in sorted({0, done // 2, done - 1} if done else set()):
            other = inputs_with(tmp_path / "other.jsonl", n, changed)
            with pytest.raises(ResumeError, match="differ"):
                check_resume(out, identity(), other, done, warn=no_warning)
        if done < n:
            later = inputs_with(tmp_path / "later.jsonl", n, done)
            assert check_resume(out, identity(), later, done, warn=no_warning).count == done
    return seen


def test_no_false_mismatch_or_match_whenever_a_crash_stops_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 100
    inputs = inputs_with(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    states = run_protocol(out, inputs, 0, n, monkeypatch, batch=8)
    assert check_every_state(tmp_path, states, n) == set(range(n + 1))


def test_after_a_resume_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped at 45, then resumed to the end (its own fingerprint anew)."""
    n = 100
    inputs = inputs_with(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    run_protocol(out, inputs, 0, 45, monkeypatch, batch=8)
    states = run_protocol(out, inputs, 45, n, monkeypatch, batch=8)
    assert check_every_state(tmp_path, states, n) == set(range(45, n + 1))


def test_a_changed_input_is_named_by_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blank lines are not inputs but count as lines of the file.
    lines = [json.dumps({"n": i}) for i in range(30)]
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("\n" + "\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    run_protocol(out, inputs, 0, 20, monkeypatch, batch=8)  # checkpoints at 8, 16, 20
    changed = list(lines)
    changed[18] = '{"n": 18, "new": true}'  # input 19, after the last checkpoint: exact
    inputs.write_text("\n" + "\n".join(changed) + "\n")
    with pytest.raises(ResumeError, match=r"input line 20 of .*in.jsonl differs"):
        check_resume(out, identity(), inputs, 20, warn=no_warning)
    changed = list(lines)
    changed[10] = '{"n": 10, "new": true}'  # inside the checkpoint 8..16: a range
    inputs.write_text("\n" + "\n".join(changed) + "\n")
    with pytest.raises(ResumeError, match=r"between line 10 and line 17 of .*in.jsonl"):
        check_resume(out, identity(), inputs, 20, warn=no_warning)


def test_line_endings_and_blank_lines_do_not_count_as_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = inputs_with(tmp_path / "in.jsonl", 20)
    out = tmp_path / "out.jsonl"
    run_protocol(out, inputs, 0, 20, monkeypatch, batch=8)
    text = inputs.read_text()
    inputs.write_bytes(("\n\n" + text.replace("\n", "\r\n")).rstrip().encode())
    assert check_resume(out, identity(), inputs, 20, warn=no_warning).count == 20


def test_shorter_inputs_are_refused_even_with_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = inputs_with(tmp_path / "in.jsonl", 20)
    out = tmp_path / "out.jsonl"
    run_protocol(out, inputs, 0, 20, monkeypatch, batch=8)
    inputs_with(inputs, 12)
    with pytest.raises(ResumeError, match="the inputs are shorter than the 20 already run"):
        check_resume(out, identity(), inputs, 20, force=True, warn=lambda _: None)


def test_an_output_cut_short_by_hand_cannot_be_checked_past_the_ring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = inputs_with(tmp_path / "in.jsonl", 40)
    out = tmp_path / "out.jsonl"
    run_protocol(out, inputs, 0, 40, monkeypatch, batch=8)
    # 35..39 are in the ring, and 32 is a checkpoint: 37 records can be checked...
    assert check_resume(out, identity(), inputs, 37, warn=no_warning).count == 37
    # ... 20 cannot (16 is a checkpoint, but the ring holds 32..39 now): refused.
    with pytest.raises(ResumeError, match="does not cover inputs 17 to 20"):
        check_resume(out, identity(), inputs, 20, warn=no_warning)


def test_a_lost_fingerprint_tail_refuses_rather_than_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a power loss the fingerprint's last writes may be zeros: never a match."""
    inputs = inputs_with(tmp_path / "in.jsonl", 20)
    out = tmp_path / "out.jsonl"
    run_protocol(out, inputs, 0, 20, monkeypatch, batch=8)
    sidecar = sidecar_path(out)
    data = sidecar.read_bytes()
    header = data.index(b"\n") + 1
    sidecar.write_bytes(data[:header] + bytes(len(data) - header))  # ring and log zeroed
    with pytest.raises(ResumeError, match="does not cover inputs 1 to 20"):
        check_resume(out, identity(), inputs, 20, warn=no_warning)


# -- the flow, its config, its variables ----------------------------------------------------


def fingerprinted(tmp_path: Path, who: FlowIdentity, n: int = 3) -> tuple[Path, Path]:
    inputs = inputs_with(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    fingerprint = Fingerprint.create(out, who, inputs)
    with JsonlWriter(out) as writer:
        for i in range(n):
            fingerprint.before(i)
            writer.write({"index": i, "outcome": "success", "result": i})
    fingerprint.close(n)
    return out, inputs


def test_a_changed_flow_file_is_refused_and_force_overrides(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW)
    out, inputs = fingerprinted(tmp_path, FlowIdentity.of(load_flow(flow)))
    flow.write_text("output: {$input: n}  # edited\n")
    now = FlowIdentity.of(load_flow(flow))
    with pytest.raises(ResumeError, match=r"the flow changed since the first run \(flow.yaml\)"):
        check_resume(out, now, inputs, 3, warn=no_warning)
    warned: list[str] = []
    assert check_resume(out, now, inputs, 3, force=True, warn=warned.append).count == 3
    assert warned == [
        "resuming anyway (--force), although the flow changed since the first run (flow.yaml)"
    ]


def test_the_config_beside_the_flow_is_part_of_it(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW)
    config = tmp_path / "pocketbatch.yaml"
    config.write_text("mocks: {}\n")
    out, inputs = fingerprinted(tmp_path, FlowIdentity.of(load_flow(flow)))
    config.write_text("mocks: {}\npython_imports: false\n")
    with pytest.raises(
        ResumeError, match=r"the config changed since the first run \(.*pocketbatch.yaml\)"
    ):
        check_resume(out, FlowIdentity.of(load_flow(flow)), inputs, 3, warn=no_warning)
    config.unlink()
    with pytest.raises(
        ResumeError, match=r"the first run used .*pocketbatch.yaml, this one no config"
    ):
        check_resume(out, FlowIdentity.of(load_flow(flow)), inputs, 3, warn=no_warning)


def test_a_changed_variable_only_warns_and_is_not_stored_in_clear(tmp_path: Path) -> None:
    out, inputs = fingerprinted(tmp_path, identity(token="s3cret", rate=5))
    assert b"s3cret" not in sidecar_path(out).read_bytes()
    warned: list[str] = []
    now = identity(token="s3cret", rate=6)
    assert check_resume(out, now, inputs, 3, warn=warned.append).count == 3
    assert warned == [
        "--var rate differs from the first run's (the records already written used the "
        "first run's value)"
    ]


def test_an_output_without_fingerprint_warns_and_resumes(tmp_path: Path) -> None:
    inputs = inputs_with(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    out.write_text('{"index":0,"outcome":"success","result":0}\n')
    warned: list[str] = []
    assert check_resume(out, identity(), inputs, 1, warn=warned.append).count == 1
    assert len(warned) == 1, warned
    assert "has no fingerprint" in warned[0], warned


@pytest.mark.parametrize(
    "content", [b"", b"not json\n", b'{"pocketbatch": "run-batch fingerprint", "format": 99}\n']
)
def test_an_unreadable_fingerprint_is_refused(tmp_path: Path, content: bytes) -> None:
    out, inputs = fingerprinted(tmp_path, identity())
    sidecar_path(out).write_bytes(content)
    with pytest.raises(ResumeError, match=r"fingerprint .* cannot be read"):
        check_resume(out, identity(), inputs, 3, warn=no_warning)
    assert check_resume(out, identity(), inputs, 3, force=True, warn=lambda _: None).count == 3


def test_nothing_written_yet_needs_no_check(tmp_path: Path) -> None:
    inputs = inputs_with(tmp_path / "in.jsonl", 3)
    sidecar_path(tmp_path / "out.jsonl").write_text("garbage")
    assert check_resume(tmp_path / "out.jsonl", identity(), inputs, 0, warn=no_warning).count == 0


def test_a_new_fingerprint_replaces_the_old_one_whole(tmp_path: Path) -> None:
    out, inputs = fingerprinted(tmp_path, identity(), n=3)
    before = sidecar_path(out).read_bytes()
    Fingerprint.create(out, identity("output: 2\n"), inputs).close(0)
    after = sidecar_path(out).read_bytes()
    assert after != before
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []

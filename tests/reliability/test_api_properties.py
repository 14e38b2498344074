"""Property-based tests (Hypothesis) of the API's text and number arguments.

Any text, including what PostgreSQL cannot store (NUL, unpaired surrogates): stored and read back
byte for byte, or refused with InvalidArgumentError exactly when PostgreSQL text cannot hold it,
and nothing else. Any integer or float where an id, a count, an age or a limit is expected: the
documented answer or InvalidArgumentError, never OverflowError, a wrapped-around value or a
server error. The pinned corpus of values every text argument must accept is in test_faults.py
(`test_hostile_strings`); these draw new values on every run.
"""

from __future__ import annotations

import math

import psycopg
import pytest
from conftest import scalar
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from job_manager import InvalidArgumentError, JobManager

# Every code point, surrogates and NUL included, biased towards what SQL and COPY treat
# specially.
ANY_TEXT = st.one_of(
    st.text(st.characters(codec=None, categories=None), max_size=40),
    st.lists(
        st.sampled_from(["\x00", "\ud800", "'", '"', "\\", "\t", "\n", "\r", "\\.", "%s", "$1"]),
        max_size=6,
    ).map("".join),
)

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# Unicode's White_Space property, as Rust's str::trim uses it (Python's str.strip also strips
# U+001C..U+001F, which are not White_Space): a prompt of only these is blank and refused.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + ("\u2028\u2029\u202f\u205f\u3000")
)


def unstorable(v: str) -> bool:
    """What PostgreSQL text cannot hold: NUL, unpaired surrogates."""
    return "\x00" in v or any(0xD800 <= ord(c) <= 0xDFFF for c in v)


@SETTINGS
@given(text=ANY_TEXT)
@example(text="\x00")
@example(text="a\udfffb")
@example(text="   ")
def test_free_text_round_trips_or_is_refused(
    jm: JobManager, db: psycopg.Connection, text: str
) -> None:
    anchor = jm.add_job(f"anchor {scalar(db, 'SELECT count(*) FROM jobs')}", "VIDEO_PROD")
    download = jm.add_download_task(anchor, "gs://anchor", "/anchor", "video")
    checks = {
        "prompt": lambda v: jm.get_job_by_id(jm.add_job(v, "IMAGE_TEST"))["prompt_text"],
        "error_message": lambda v: (
            jm.mark_job_as_failed(anchor, v) and jm.get_job_by_id(anchor)["error_message"]
        ),
        "local_path": lambda v: (
            jm.mark_job_as_completed(anchor, v) and jm.get_job_by_id(anchor)["local_path"]
        ),
        "operation_id": lambda v: (
            jm.update_job_operation_info(anchor, v) and jm.get_job_operation_id(anchor)
        ),
        "remote_url": lambda v: scalar(
            db,
            "SELECT remote_url FROM download_queue WHERE id = %s",
            jm.add_download_task(anchor, v, "/p", "image"),
        ),
        "download error": lambda v: (
            jm.update_download_status(download, "failed", v)
            and scalar(db, "SELECT error_message FROM download_queue WHERE id = %s", download)
        ),
    }
    for name, call in checks.items():
        refused = unstorable(text) or (name == "prompt" and not text.strip(WHITE_SPACE))
        if refused:
            with pytest.raises(InvalidArgumentError):
                call(text)
            continue
        if name == "prompt" and scalar(
            db, "SELECT count(*) FROM jobs WHERE prompt_text = %s", text
        ):
            continue  # drawn before: add_job returns the queued job, checked by its own tests
        assert call(text) == text, name
    # A closed vocabulary takes none of it (unless the draw is one of its words).
    if text not in ("IMAGE_TEST", "VIDEO_PROD"):
        with pytest.raises(InvalidArgumentError):
            jm.add_job("closed vocabulary", text)
    if unstorable(text):
        with pytest.raises(InvalidArgumentError):
            jm.check_table_exists(text)
    else:
        assert jm.check_table_exists(text) is (text in ("jobs", "download_queue"))


NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
)


@SETTINGS
@given(value=NUMBERS)
def test_numbers_are_answered_or_refused(jm: JobManager, value: int | float) -> None:
    is_int = isinstance(value, int)
    # Ids: positive 32-bit integers (SERIAL); any other number is refused before a query.
    if is_int and 1 <= value <= 2**31 - 1:
        assert jm.get_job_by_id(value) is None
        assert jm.mark_job_as_completed(value) is False
    else:
        with pytest.raises((InvalidArgumentError, TypeError)) as e:
            jm.get_job_by_id(value)  # type: ignore[arg-type]
        if is_int:
            assert e.type is InvalidArgumentError
    # Days: 0 to a century (the documented bound); limits: any non-negative 64-bit integer.
    for call, top in (
        (lambda: jm.cleanup_old_downloads(value, dry_run=True), 36_500),  # type: ignore[arg-type]
        (lambda: jm.get_pending_downloads(limit=value), 2**63 - 1),  # type: ignore[arg-type]
    ):
        if is_int and 0 <= value <= top:
            assert call() in (0, [])
        else:
            with pytest.raises((InvalidArgumentError, TypeError)) as e:
                call()
            if is_int:
                assert e.type is InvalidArgumentError
    # Ages in seconds: a finite, non-negative number of seconds that PostgreSQL's interval
    # can hold; nothing processing here, so 0 jobs either way.
    try:
        n = jm.reset_stuck_jobs(older_than_seconds=value, dry_run=True)  # type: ignore[arg-type]
    except InvalidArgumentError:
        assert not (math.isfinite(value) and 0 <= value < 1e9), value
    else:
        assert n == 0
        assert math.isfinite(value)
        assert value >= 0

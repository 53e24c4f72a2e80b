"""RESULTS.md merging: a partial long run refreshes its rows and keeps the others."""

from __future__ import annotations

from ._results import Results


def test_a_later_run_replaces_its_rows_and_keeps_the_rest() -> None:
    first = Results(started="day 1")
    first.add("Restarts", case="pg-fast", mode="sync", lost=0)
    first.add("Restarts", case="pg-fast", mode="async", lost=0)
    first.add("Races", store="sqlite", writers="4 processes", lost=0)
    first.outcome = "3 passed"
    earlier = first.render("make reliability")

    second = Results(started="day 2")
    second.add("Restarts", case="pg-fast", mode="sync", lost=1)
    second.outcome = "1 failed"
    text = second.render("make reliability", earlier)

    assert "| pg-fast | sync | 1 | day 2 |" in text
    assert "| pg-fast | sync | 0 | day 1 |" not in text
    assert "| pg-fast | async | 0 | day 1 |" in text
    assert "| sqlite | 4 processes | 0 | day 1 |" in text
    assert "- day 1: 3 passed" in text
    assert "- day 2: 1 failed" in text
    assert text.count("## Notes") == 1


def test_rows_of_a_file_without_a_run_column_take_its_date() -> None:
    earlier = (
        "# Reliability results\n\nWritten by `make reliability` on 2026-11-28 19:43 UTC.\n\n"
        "Tests: 18 passed.\n\n## Races\n\n| store | writers | lost |\n|---|---|---|\n"
        "| redis | 4 processes | 0 |\n\n## Notes\n\nold notes\n"
    )
    text = Results(started="later", outcome="2 passed").render("make reliability", earlier)
    assert "| redis | 4 processes | 0 | 2026-11-28 19:43 UTC |" in text
    assert "- 2026-11-28 19:43 UTC: 18 passed" in text
    assert "old notes" not in text

"""Where ``rollguard data replay --weeks N`` continues: only accepted batches and the files this
feed wrote itself move it; a quarantined far-future week or a garbage file with a week in its name
never does; and a replay that delivers nothing says why, naming the week or file that decided it
(issue 17). Most tests replay a four-week log of the CDNOW shape (fast); the first one replays the
packaged CDNOW log."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline import feed
from pipeline.ingest import ingest_landing
from rollguard.cli import app
from rollguard.settings import Settings

HEADER = "transaction_id,customer_id,date,number_of_cds,dollar_value\n"
#: A well-formed record of week 2099-W01: ingestion quarantines it as ``week_in_future``.
FAR_FUTURE = HEADER + "1,1,2099-01-06,1,11.77\n"


#: A purchase log of the CDNOW shape covering 1997-W01 .. 1997-W04 (it ends on a Sunday).
SMALL_LOG = (
    "customer_id date number_of_cds dollar_value\n"
    "1 19970101 1 10.00\n"
    "2 19970102 2 20.00\n"
    "1 19970108 1 11.00\n"
    "3 19970115 3 30.00\n"
    "2 19970122 1 12.00\n"
    "3 19970126 1 13.00\n"
)


def _settings(home: Path, **kwargs: object) -> Settings:
    return Settings(home=home, env="test", _env_file=None, **kwargs)  # type: ignore[call-arg]


@pytest.fixture
def small_log(tmp_path: Path) -> Path:
    path = tmp_path / "small_log.txt"
    path.write_text(SMALL_LOG)
    return path


def _small(home: Path, log: Path, **kwargs: object) -> Settings:
    return _settings(home, dataset_path=log, **kwargs)


def test_a_quarantined_far_future_week_does_not_stop_the_feed(home: Path) -> None:
    settings = _settings(home)
    feed.replay(settings, weeks=2)
    (settings.landing_dir / "cdnow_2099-W01.csv").write_text(FAR_FUTURE)
    report = ingest_landing(settings)
    assert [o.reason_code for o in report.quarantined] == ["week_in_future"]

    result = feed.replay(settings, weeks=1)

    assert result.written == ["cdnow_1997-W03.csv"]
    assert any("cdnow_2099-W01.csv" in line for line in result.ignored)


def test_a_far_future_week_waiting_in_the_landing_zone_does_not_move_the_feed(
    home: Path, small_log: Path
) -> None:
    settings = _small(home, small_log)
    feed.replay(settings, weeks=2)
    (settings.landing_dir / "cdnow_2099-W01.csv").write_text(FAR_FUTURE)
    assert feed.replay(settings, weeks=1).written == ["cdnow_1997-W03.csv"]


def test_a_garbage_file_named_1998_w10_does_not_make_the_feed_jump_to_1998_w11(home: Path) -> None:
    settings = _settings(home)
    feed.replay(settings, weeks=2)
    ingest_landing(settings)
    (settings.landing_dir / "cdnow_1998-W10.csv").write_text("this is not a weekly file\n")
    assert [o.reason_code for o in ingest_landing(settings).quarantined] == ["schema_mismatch"]

    result = feed.replay(settings, weeks=1)

    assert result.written == ["cdnow_1997-W03.csv"]
    assert result.after_week == "1997-W02"
    assert result.after_cause == "accepted batch cdnow_1997-W02.csv"
    assert [line.split(":")[0] for line in result.ignored] == ["cdnow_1998-W10.csv"]


@pytest.mark.parametrize(
    ("name", "content", "ingested"),
    [
        ("cdnow_1998-W10.csv", "this is not a weekly file\n", False),
        ("cdnow_1998-W10.csv", "this is not a weekly file\n", True),
        ("cdnow_1998-W10.csv", HEADER + "1,1,1997-01-07,1,11.77\n", True),  # date outside week
        ("backup_cdnow_1998-W10.csv", "garbage\n", False),
        ("backup_cdnow_1998-W10.csv", "garbage\n", True),
    ],
)
def test_a_garbage_file_named_with_a_week_does_not_move_the_feed(
    home: Path, small_log: Path, name: str, content: str, ingested: bool
) -> None:
    settings = _small(home, small_log)
    feed.replay(settings, weeks=2)
    ingest_landing(settings)
    (settings.landing_dir / name).write_text(content)
    if ingested:
        assert [o.file for o in ingest_landing(settings).quarantined] == [name]

    result = feed.replay(settings, weeks=1)

    assert result.written == ["cdnow_1997-W03.csv"]
    assert not (settings.landing_dir / "cdnow_1998-W11.csv").exists()


def test_a_file_this_feed_wrote_moves_it_even_when_quarantined(home: Path, small_log: Path) -> None:
    """The feed delivered the week; ingestion refused it for a reason of its own (here: too large).
    Writing the same bytes again would only be skipped by the ledger, so the feed goes on."""
    settings = _small(home, small_log, max_file_bytes=60)
    feed.replay(settings, weeks=1)
    assert [o.reason_code for o in ingest_landing(settings).quarantined] == ["too_large"]
    assert feed.replay(settings, weeks=1).written == ["cdnow_1997-W02.csv"]


def test_replay_that_delivers_nothing_says_why_naming_the_newest_accepted_week(
    home: Path, small_log: Path
) -> None:
    settings = _small(home, small_log)
    feed.replay(settings, weeks=4)
    ingest_landing(settings)

    result = feed.replay(settings, weeks=1)

    assert result.written == []
    assert result.note is not None
    assert "the source has no week after 1997-W04" in result.note
    assert "accepted batch cdnow_1997-W04.csv" in result.note
    assert result.note in feed.format_replay(result)


def test_replay_until_before_the_first_week_says_why(home: Path, small_log: Path) -> None:
    result = feed.replay(_small(home, small_log), until=pd.Timestamp("1996-12-01").date())
    assert result.written == []
    assert result.note is not None and "1997-W01" in result.note


def test_replay_command_says_why_it_delivers_nothing(
    home: Path, small_log: Path, monkeypatch
) -> None:
    monkeypatch.setenv("ROLLGUARD_HOME", str(home))
    monkeypatch.setenv("ROLLGUARD_DATASET_PATH", str(small_log))
    feed.replay(_small(home, small_log), weeks=4)

    text = CliRunner().invoke(app, ["data", "replay", "--weeks", "1"])
    as_json = CliRunner().invoke(app, ["data", "replay", "--weeks", "1", "--json"])

    assert text.exit_code == 0, text.output
    assert "nothing to deliver: the source has no week after 1997-W04" in text.output
    assert "cdnow_1997-W04.csv, written by this feed" in text.output
    body = json.loads(as_json.stdout)
    assert body["written"] == [] and "1997-W04" in body["note"]


def test_live_replay_says_why_it_stopped(home: Path, small_log: Path, monkeypatch) -> None:
    monkeypatch.setenv("ROLLGUARD_HOME", str(home))
    monkeypatch.setenv("ROLLGUARD_DATASET_PATH", str(small_log))
    result = CliRunner().invoke(app, ["data", "replay", "--live", "--every", "1ms", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["delivered"] == ["1997-W01", "1997-W02", "1997-W03", "1997-W04"]
    assert "the source has no week after 1997-W04" in body["stopped_because"]

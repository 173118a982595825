"""What `intentflow teach` writes reaches the outcome watcher as one change of the final file, never a temp file."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flow_helpers import write_outcomes

from flows.watch import watch_outcomes
from intentflow.errors import ValidationFailed
from intentflow.fileio import TEMP_PREFIX
from intentflow.teach import Correction, teach_utterances


class Bursts:
    """A fake ``emit``: records the file names of each burst the watcher reports."""

    def __init__(self) -> None:
        self.seen: list[set[str]] = []
        self.arrived = threading.Condition()

    def __call__(self, folder: Path, paths: set[str]) -> None:
        with self.arrived:
            self.seen.append(set(paths))
            self.arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[set[str]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.seen) >= count, timeout=timeout)
            return list(self.seen)


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, Bursts]]:
    folder = write_outcomes(tmp_path / "outcomes")
    bursts = Bursts()
    stop = threading.Event()
    thread = threading.Thread(target=watch_outcomes, args=(folder, bursts, stop),
                              kwargs={"quiet": 0.5, "max_wait": 30.0}, daemon=True)
    thread.start()
    time.sleep(0.8)  # let the watcher register with the file system before anything changes
    yield folder, bursts
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_teaching_fires_one_change_naming_the_outcome_files(watched: tuple[Path, Bursts]) -> None:
    folder, bursts = watched
    # A refused teach writes nothing, so the watcher reports nothing.
    with pytest.raises(ValidationFailed):
        teach_utterances(folder, [Correction("crank up the tunes", "play_music"),
                                  Correction("wake me at seven", "play_music")])

    teach_utterances(folder, [Correction("crank up the tunes", "play_music"),
                              Correction("do i need a brolly", "check_weather")])

    [burst] = bursts.wait_for(1)
    # The temp files (.tmp-play_music.json.XXXX) were seen by the file system but are not outcome files.
    assert burst == {"play_music.json", "check_weather.json"}
    assert not [path for path in folder.iterdir() if path.name.startswith(TEMP_PREFIX)]

    # A later teach, with --create, is a burst of its own.
    teach_utterances(folder, [Correction("order a pizza", "order_food")], create=True)
    assert bursts.wait_for(2)[1] == {"order_food.json"}
    time.sleep(0.8)
    assert len(bursts.seen) == 2

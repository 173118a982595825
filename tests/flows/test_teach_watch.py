"""What `intentflow teach` writes reaches the outcome watcher as one change of the final file, never a temp file."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from intentflow.errors import ValidationFailed
from intentflow.fileio import TEMP_PREFIX
from intentflow.teach import Correction, teach_utterances

from .flow_helpers import Recorder


def test_teaching_fires_one_change_naming_the_outcome_files(
        start_watcher: Callable[..., tuple[Path, Recorder]]) -> None:
    folder, recorder = start_watcher(quiet=0.5)
    # A refused teach writes nothing, so the watcher reports nothing.
    with pytest.raises(ValidationFailed):
        teach_utterances(folder, [Correction("crank up the tunes", "play_music"),
                                  Correction("wake me at seven", "play_music")])

    teach_utterances(folder, [Correction("crank up the tunes", "play_music"),
                              Correction("do i need a brolly", "check_weather")])

    [burst] = recorder.wait_for(1)
    # The temp files (.tmp-play_music.json.XXXX) were seen by the file system but are not outcome files.
    assert burst == {"play_music.json", "check_weather.json"}
    assert not [path for path in folder.iterdir() if path.name.startswith(TEMP_PREFIX)]

    # A later teach, with --create, is a burst of its own.
    teach_utterances(folder, [Correction("order a pizza", "order_food")], create=True)
    assert recorder.wait_for(2)[1] == {"order_food.json"}
    time.sleep(0.8)
    assert len(recorder.bursts) == 2

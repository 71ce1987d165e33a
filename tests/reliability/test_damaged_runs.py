"""A damaged run folder (issue 19, point 5): each damaged or missing file is one line naming it and
what to do (rc 2, no traceback) through the real command, and UserError through the API."""

import shutil

import pandas as pd
import pytest

import neuronatlas as na
from neuronatlas.errors import UserError
from tests.reliability.helpers import cli, one_line_error


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def copy(recording, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(recording.straight[1], dst)
    return dst


@pytest.mark.parametrize("damage, command, says", [
    (lambda r: truncate(r / "run.json"), "info", "run.json is damaged (not valid JSON"),
    (lambda r: (r / "run.json").write_text("[1, 2]"), "info", "is not a neuronatlas run file"),
    (lambda r: truncate(r / "units.parquet"), "export", "units.parquet is damaged"),
    (lambda r: (r / "images.parquet").unlink(), "export", "images.parquet is missing"),
    (lambda r: (r / "units.parquet").write_text("not parquet"), "export",
     "units.parquet is damaged"),
])
def test_a_damaged_file_is_one_line_naming_it(copy, tmp_path, damage, command, says):
    damage(copy)
    args = ["info", copy] if command == "info" else ["atlas", copy, "--export", tmp_path / "site"]
    r = cli(*args)
    if command == "info":
        line = one_line_error(r, says)
    else:  # the export's progress bar shares stderr: one error line among its lines
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        errors = ["error: " + l.split("error: ", 1)[1] for l in r.stderr.splitlines()
                  if "error: " in l]
        assert len(errors) == 1 and says in errors[0], r.stderr
        line = errors[0]
    assert "re-record" in line


def test_damaged_tables_through_the_api(copy):
    run = na.open_run(copy)
    (copy / "labels").mkdir()
    pd.DataFrame({"unit": ["fc:0"], "method": ["m"], "rank": [0], "label": ["x"],
                  "score": [1.0]}).to_parquet(copy / "labels" / "m.parquet")
    (copy / "labels" / "m.json").write_text("{")
    truncate(copy / "labels" / "m.parquet")
    with pytest.raises(UserError, match=r"m\.parquet is damaged.*neuronatlas describe"):
        run.labels()
    with pytest.raises(UserError, match=r"m\.json is damaged"):
        run.label_config("m")
    truncate(copy / "images.parquet")
    with pytest.raises(UserError, match=r"images\.parquet is damaged"):
        run.topk("fc:0")

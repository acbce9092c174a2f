"""`sfamp config validate|show` as a user runs them: a real subprocess, exit codes, output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "mapping.json"


def sfamp(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", **(env or {})},
    )


def test_version() -> None:
    result = sfamp("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("sfamp ")


def test_validate_good_file() -> None:
    result = sfamp("config", "validate", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert "Account -> account" in result.stdout


def test_validate_lists_every_mistake(tmp_path: Path) -> None:
    doc = json.loads(EXAMPLE.read_text())
    doc["sync_cadence"] = {"mode": "daily", "at": "25:00"}
    doc["mappings"][0]["group_properties"][1]["sfdc_field"] = "Name"
    doc["mappings"][0]["group_properties"][2]["amplitude_property"] = "$oops"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    result = sfamp("config", "validate", str(bad))
    assert result.returncode == 1
    for path in (
        "$.sync_cadence.at",
        "$.mappings[0].group_properties[1].sfdc_field",
        "$.mappings[0].group_properties[2].amplitude_property",
    ):
        assert path in result.stdout
    as_json = json.loads(sfamp("config", "validate", "--json", str(bad)).stdout)
    assert as_json["valid"] is False
    assert len(as_json["problems"]) == 3


def mapping_file(tmp_path: Path, content: str | None) -> Path:
    """``m.json`` holding ``content``; None: no such file."""
    path = tmp_path / "m.json"
    if content is not None:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("content", "expected"), [(None, "does not exist"), ("{not json", "not valid JSON")]
)
def test_validate_unreadable_file_is_one_clear_line(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = mapping_file(tmp_path, content)
    result = sfamp("config", "validate", str(path))
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON"),
        ('{"version": 1, "version": 1}', "is given 2 times"),
    ],
)
def test_validate_json_reports_an_unreadable_file_in_its_shape(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = mapping_file(tmp_path, content)
    result = sfamp("config", "validate", "--json", str(path))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["file"], report["valid"]) == (str(path), False)
    assert [p["path"] for p in report["problems"]] == ["$.version" if "given" in expected else "$"]
    assert expected in report["problems"][0]["message"]


def test_show_prints_normalized_form() -> None:
    result = sfamp("config", "show", str(EXAMPLE))
    assert result.returncode == 0
    shown = json.loads(result.stdout)
    assert shown["version"] == 1
    assert shown["mappings"][0]["on_delete"] == "mark"


def test_show_refuses_invalid_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1}')
    result = sfamp("config", "show", str(bad))
    assert result.returncode == 1
    assert "$.mappings" in result.stderr


@pytest.mark.parametrize(
    "args", [[], ["config"], ["config", "validate"], ["sandbox"], ["sandbox", "kafka"]]
)
def test_help_everywhere(args: list[str]) -> None:
    result = sfamp(*args, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout


def six_group_types(tmp_path: Path) -> Path:
    doc = json.loads(EXAMPLE.read_text())
    relation = doc["mappings"][0]
    doc["mappings"] = [{**relation, "group_type": f"type_{n}"} for n in range(6)]
    path = tmp_path / "six.json"
    path.write_text(json.dumps(doc))
    return path


def test_validate_reports_more_group_types_than_amplitude_tracks(tmp_path: Path) -> None:
    path = six_group_types(tmp_path)
    result = sfamp("config", "validate", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "$.mappings[5].group_type" in result.stdout
    assert "Amplitude tracks at most 5 group types" in result.stdout
    raised = sfamp(
        "config", "validate", str(path), cwd=tmp_path, env={"SFAMP_AMPLITUDE__MAX_GROUP_TYPES": "6"}
    )
    assert raised.returncode == 0, raised.stdout


@pytest.mark.parametrize("command", [["verify"], ["import"]])
def test_missing_credentials_are_listed_one_per_line(tmp_path: Path, command: list[str]) -> None:
    result = sfamp("config", *command, str(EXAMPLE), cwd=tmp_path)
    assert result.returncode == 1
    assert "invalid settings (5 problems)" in result.stderr
    for name in ("CLIENT_ID", "CLIENT_SECRET", "USERNAME", "PASSWORD"):
        assert f"SFAMP_SALESFORCE__{name}: required for auth_flow=password" in result.stderr
    assert "SFAMP_AMPLITUDE__API_KEY: required to send to Amplitude" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_misspelt_variable_stops_every_command_with_the_nearest_name(tmp_path: Path) -> None:
    result = sfamp(
        "config", "validate", str(EXAMPLE), cwd=tmp_path, env={"SFAMP_MAPING_FILE": "m.json"}
    )
    assert result.returncode == 1
    assert "invalid settings (1 problem)" in result.stderr
    assert "SFAMP_MAPING_FILE: is not an sfamp setting; did you mean SFAMP_MAPPING_FILE?" in (
        result.stderr
    )

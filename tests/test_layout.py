"""The workflow's files hold together: every rule's env, script and profile entry exists,
and the conda env files are pinned (checked offline: conda cannot run on CI)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((REPO / "rules").glob("*.smk"))


def _rule_blocks():
    for path in RULE_FILES:
        text = path.read_text()
        for match in re.finditer(r"^(?:rule|checkpoint) (\w+):\n((?:    .*\n|\n)+)", text, re.M):
            yield path, match.group(1), match.group(2)


def test_every_rule_names_an_existing_env_and_script():
    rules = list(_rule_blocks())
    assert {name for _, name, _ in rules} >= {
        "inspect",
        "convert",
        "preprocess",
        "perfusion",
        "subject_metrics",
        "study",
    }
    for path, name, body in rules:
        env = re.search(r'conda:\n\s+"([^"]+)"', body)
        script = re.search(r'script:\n\s+"([^"]+)"', body)
        assert env and (path.parent / env.group(1)).resolve().exists(), name
        assert script and (path.parent / script.group(1)).resolve().exists(), name


@pytest.mark.parametrize("env_file", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_conda_envs_are_pinned(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert "conda-forge" in env["channels"]
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for requirement in dep["pip"]:
                assert requirement == ".." or "==" in requirement, requirement
        elif dep != "pip":
            # name=version, optionally =build (e.g. pytorch=2.7.1=cuda126*)
            assert re.fullmatch(r"[\w.-]+=[\w.]+(=[\w.*]+)?", dep), (
                f"{env_file.name}: unpinned {dep}"
            )


def test_profiles_name_only_real_rules():
    from bolus.models import MODELS

    names = {name for _, name, _ in _rule_blocks()}
    names |= {f"predict_{m}" for m in MODELS}  # rules/models.smk makes one per model
    for path in RULE_FILES:  # `use rule a as b with:` makes rule b
        names |= set(re.findall(r"^use rule \w+ as (\w+)", path.read_text(), re.M))
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    for section in ("set-resources", "set-threads", "groups"):
        assert set(default.get(section, {})) <= names, section
    slurm = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert slurm["executor"] == "slurm"


def test_scripts_are_thin():
    """Science lives in src/bolus; a script hands paths to one library function."""
    for script in (REPO / "scripts").glob("*.py"):
        code = [line for line in script.read_text().splitlines() if line.strip()]
        assert len(code) <= 16, script.name
        assert sum(line.startswith("from bolus") for line in code) >= 1, script.name

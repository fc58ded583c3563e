"""The pins in requirements.txt and environment.yml agree, and every one is exact."""
import re

import yaml


def _pins(lines):
    return sorted(line.strip() for line in lines if line.strip() and not line.strip().startswith("#"))


def test_environment_yml_matches_requirements(repo):
    req = _pins((repo / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((repo / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip) == req
    assert "python=3.11" in env["dependencies"]


def test_every_requirement_is_pinned_exactly(repo):
    for line in _pins((repo / "requirements.txt").read_text().splitlines()):
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][\w.]*", line), line


"""The documentation site builds without warnings and the parameter page is complete."""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import make_parameter_docs  # noqa: E402


def _leaves(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        keys |= _leaves(value, f"{path}.") if isinstance(value, dict) and value else {path}
    return keys


def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "parameters" / "index.html").exists()


def test_every_parameter_is_documented_with_a_meaning():
    documented = {}
    for path in sorted((ROOT / "conf" / "base").glob("parameters*.yml")):
        parameters, _ = make_parameter_docs.parse(path.read_text())
        documented.update({p.path: p for p in parameters})
        loaded = yaml.safe_load(path.read_text())
        # every leaf of the YAML (flow mappings like tta_compare's entries count as one)
        missing = {
            leaf
            for leaf in _leaves(loaded)
            if not any(leaf == d or leaf.startswith(f"{d}.") for d in documented)
        }
        assert not missing, (path.name, sorted(missing))
    undescribed = sorted(name for name, p in documented.items() if not p.meaning)
    assert not undescribed
    page = (ROOT / "docs" / "parameters.md").read_text()
    assert page == make_parameter_docs.render(), "run python scripts/make_parameter_docs.py"

"""The kind end-to-end run (hack/kind-e2e.sh), where Docker, kind and kubectl exist.

Elsewhere the run is skipped with the reason; the script's syntax and its agreement with the
manifests are checked everywhere.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "kind-e2e.sh"
TOOLS = ("docker", "kind", "kubectl")


def missing_tools() -> str | None:
    """Why the end-to-end run cannot happen here, or None when it can."""
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} not on PATH"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`docker info` failed: {error}"
    if info.returncode != 0:
        return "`docker info` failed: no Docker daemon is reachable"
    return None


def test_kind_end_to_end() -> None:
    reason = missing_tools()
    if reason:
        pytest.skip(
            f"needs Docker, kind and kubectl ({reason}); CI runs it: .github/workflows/e2e.yaml"
        )
    # The script's output goes to the test's captured output (shown when it fails).
    result = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, timeout=3600, check=False)
    assert result.returncode == 0, "hack/kind-e2e.sh failed: its diagnostics are above"


def test_the_script_is_valid_bash() -> None:
    result = subprocess.run(
        ["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    text = SCRIPT.read_text(encoding="utf-8")
    assert "set -euo pipefail" in text
    assert "trap cleanup EXIT" in text


def test_the_script_overrides_the_images_the_manifests_name() -> None:
    """The script swaps in its local builds by image name: a renamed image would go unnoticed
    (kind would try to pull the release image) unless the names agree."""
    text = SCRIPT.read_text(encoding="utf-8")
    deployment = yaml.safe_load((ROOT / "manifests/base/operator-deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    repository = container["image"].rsplit(":", 1)[0]
    assert re.search(rf"- name: {re.escape(repository)}\n", text)
    assert any(e["name"] == "KUBETUNE_RUNNER_IMAGE" for e in container["env"])
    assert "- name: KUBETUNE_RUNNER_IMAGE" in text
    for dockerfile in ("images/operator.Dockerfile", "images/runner.Dockerfile"):
        assert (ROOT / dockerfile).is_file()
        assert f'"$ROOT/{dockerfile}"' in text
    for example in ("examples/quickstart.yaml", "examples/modelcomparison.yaml"):
        assert (ROOT / example).is_file()
        assert f'"$ROOT/{example}"' in text

"""The shape a newcomer relies on: one folder per stage with ``stage.run(ctx, run_date)``, imports that point
down the pipeline only, and no test fixture shipped inside the package."""

from __future__ import annotations

import ast
import importlib
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

from personalize import pipeline

REPO = Path(__file__).resolve().parent.parent


def test_every_stage_is_a_folder_with_a_run_taking_ctx_and_run_date():
    for spec in pipeline.STAGE_TABLE:
        assert spec.module == f"personalize.{spec.name}.stage", spec
        run = importlib.import_module(spec.module).run
        params = list(inspect.signature(run).parameters)
        assert params[:2] == ["ctx", "run_date"], (spec.name, params)
        if spec.per_cluster:
            assert "cluster_id" in params, spec.name


def test_imports_point_down_the_pipeline():
    """The layers contract in pyproject.toml (import-linter): a cycle or an upward import fails here."""
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    done = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_package_does_not_import_test_fixtures():
    fixtures = {p.stem for p in (REPO / "tests").glob("*.py") if not p.stem.startswith(("test_", "conftest"))}
    offenders = []
    for path in (REPO / "personalize").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in fixtures | {"tests"}
            ]
    assert not offenders, offenders

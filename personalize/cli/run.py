"""Commands of the nightly run: ``personalize run`` (in order, without Airflow, or through the real Airflow
DAG with ``--airflow``), ``personalize report`` and ``personalize eval playlists``."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from personalize.cli.errors import UserError, parse_date

console = Console()

HEAVY_POOL_SLOTS = 1  # generate and render each use every core already; one heavy task at a time


def _date_or_default(ctx, value: str | None) -> dt.date:  # type: ignore[no-untyped-def]
    from personalize.pipeline import default_run_date

    if value is None:
        return default_run_date(ctx)
    return parse_date(value)


def print_summary(summary: dict) -> None:
    table = Table(title=f"Nightly run {summary['run_date']}", show_header=False)
    for key in ("clusters", "listeners", "tracks_planned", "tracks_made", "tracks_failed_verification",
                "tracks_rendered", "audio_minutes", "playlists_published", "coverage"):  # fmt: skip
        table.add_row(key.replace("_", " "), str(summary[key]))
    stages = ", ".join(f"{k} {v['seconds']:.1f} s" + ("" if v["status"] == "ok" else f" ({v['status']})")
                       for k, v in summary["stages"].items())  # fmt: skip
    table.add_row("stage timings", stages)
    table.add_row("audio", summary["audio_folder"])
    table.add_row("report", summary["report"] or "(not written)")
    console.print(table)


def airflow_env(ctx) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Environment for the Airflow CLI: its metadata DB as SQLite under the data dir, our dags folder,
    no examples, and the product settings passed on to the tasks."""
    from personalize.config import REPO_ROOT

    data_dir = Path(ctx.settings.data_dir).resolve()
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(data_dir / "airflow"))
    # `airflow dags test` waits out every retry's backoff (2, 4, 8 minutes) before it reports a failure:
    # a run someone is watching fails at once instead. Scheduled nights keep the DAG's retries.
    env.setdefault("PERSONALIZE_DAG_RETRIES", "0")
    env.update(
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PERSONALIZE_DATA_DIR=str(data_dir),
        PERSONALIZE_DATABASE_URL=ctx.settings.resolved_database_url,
        PERSONALIZE_STORAGE_URL=ctx.settings.resolved_storage_url,
    )
    # `airflow dags test` runs the tasks in its own process beside the run loop's threads: render workers
    # start from a fork server, not a fork of that process (see dags/nightly.py).
    env.setdefault("PERSONALIZE_RENDER_START_METHOD", "forkserver")
    return env


def run_with_airflow(ctx, run_date: dt.date, log_path: Path) -> int:  # type: ignore[no-untyped-def]
    """``airflow db migrate``, the pool, then ``airflow dags test nightly <date>``; output to ``log_path``."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    env = airflow_env(ctx)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        ("metadata database", [airflow, "db", "migrate"]),
        (
            "pool",
            [airflow, "pools", "set", "personalize_heavy", str(HEAVY_POOL_SLOTS), "generate and render"],
        ),
        (f"DAG nightly for {run_date}", [airflow, "dags", "test", "nightly", run_date.isoformat()]),
    ]
    with log_path.open("a") as log:
        for what, cmd in steps:
            with console.status(f"Airflow: {what} (log: {log_path})"):
                rc = subprocess.run(
                    cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
                ).returncode
            if rc != 0:
                console.print(f"[red]Airflow {what} failed (exit {rc}); see {log_path}[/]")
                return rc
    unfinished = night_incomplete(ctx, run_date)
    if unfinished:
        console.print(
            f"[red]the nightly DAG run for {run_date} did not finish: {', '.join(unfinished)}; see {log_path}[/]"
        )
        return 1
    return 0


def night_incomplete(ctx, run_date: dt.date) -> list[str]:  # type: ignore[no-untyped-def]
    """The stages of the night that are not recorded ``ok`` in ``pipeline_runs`` (empty: the night is done).
    Read from the product's own records, which every task writes through ``run_stage``."""
    from personalize.pipeline import PER_CLUSTER_STAGES, STAGES, planned_clusters
    from personalize.runs import stage_timings

    done = {t["stage"]: t["status"] for t in stage_timings(ctx, run_date)}
    nothing_planned = not planned_clusters(ctx, run_date)
    return [
        f"{s} ({done.get(s, 'not run')})"
        for s in STAGES
        if done.get(s) != "ok" and not (s in PER_CLUSTER_STAGES and nothing_planned and s not in done)
    ]


def run_command(
    date: str | None = typer.Option(
        None, "--date", help="Run date YYYY-MM-DD (default: last day with events)."
    ),
    stages: str | None = typer.Option(
        None, "--stages", help="Comma-separated subset, e.g. publish,report (default: all, in order)."
    ),
    airflow: bool = typer.Option(
        False, "--airflow", help="Run through the real Airflow DAG (airflow dags test) instead of in-process."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run the nightly pipeline for one date: ingest, profile, cluster, plan, generate, render, publish, report."""
    from personalize import pipeline
    from personalize.context import make_context
    from personalize.report.summary import night_summary
    from personalize.runs import StageBusy

    ctx = make_context()
    run_date = _date_or_default(ctx, date)
    if airflow:
        if stages:
            raise typer.BadParameter("--stages runs in-process only; the DAG always runs every stage")
        log_path = Path(ctx.settings.data_dir) / "logs" / f"airflow-nightly-{run_date.isoformat()}.log"
        rc = run_with_airflow(ctx, run_date, log_path)
        if rc != 0:
            raise typer.Exit(rc)
    else:
        chosen = tuple(s.strip() for s in stages.split(",")) if stages else pipeline.STAGES

        def said(label: str, summary: dict, seconds: float) -> None:
            brief = {
                k: v
                for k, v in summary.items()
                if isinstance(v, int | float) and k not in ("seconds", "wall_s")
            }
            console.print(
                f"[green]{label}[/] {seconds:.1f} s  "
                + ", ".join(f"{k} {v}" for k, v in list(brief.items())[:6])
            )

        try:
            pipeline.run(ctx, run_date, chosen, on_stage=said)
        except StageBusy as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from None
        except LookupError:
            if not pipeline.has_listening_events(ctx):
                raise UserError(
                    "the database holds no listening events, so there is no taste to make music for: ingest "
                    "some (`personalize ingest events FILE`, or drop files into the inbox), or make the demo "
                    "world with `personalize simulate`, then run again"
                ) from None
            raise
    summary = night_summary(ctx, run_date)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)


def release_command(
    date: str = typer.Option(..., "--date", help="Run date YYYY-MM-DD whose claims to free."),
    stages: str | None = typer.Option(
        None, "--stages", help="Comma-separated stages (default: all; generate covers every generate:c<id>)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Also free claims held on other machines (check that run is gone first)."
    ),
) -> None:
    """Free the stage claims a killed run left for a date, so the next run goes ahead at once.

    The next run takes such a claim over by itself: at once on the host that held it, from another host
    after PERSONALIZE_STAGE_LEASE_S without a heartbeat. A claim whose process still runs on this machine
    is never freed; one held on another machine needs --force.
    """
    from personalize.context import make_context
    from personalize.runs import release_claims

    ctx = make_context()
    run_date = _date_or_default(ctx, date)
    chosen = [s.strip() for s in stages.split(",")] if stages else None
    result = release_claims(ctx, run_date, chosen, force=force)
    if not result:
        console.print(f"no stage of {run_date} is running: nothing to release")
        return
    for r in result:
        mark = "[green]released[/]" if r["released"] else "[yellow]kept[/]"
        console.print(f"{mark} {r['stage']} ({r['holder']}, since {r['started_at']}): {r['why']}")
    if not all(r["released"] for r in result):
        raise typer.Exit(1)


def report_command(
    date: str | None = typer.Option(
        None, "--date", help="Run date YYYY-MM-DD (default: last day with events)."
    ),
) -> None:
    """Write the run report page <data dir>/reports/<date>/index.html."""
    from personalize import pipeline
    from personalize.context import make_context

    ctx = make_context()
    run_date = _date_or_default(ctx, date)
    summary = pipeline.run_stage(ctx, "report", run_date)
    console.print(f"report: {summary['report']}")


def eval_playlists_command(
    date: str | None = typer.Option(None, "--date", help="First run date (default: last day with events)."),
    nights: int = typer.Option(
        1, "--nights", min=1, help="Consecutive nights: run, listen, feed the plays back as events, repeat."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulated listens."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """Simulated listeners hear the published playlists; like rate and completion vs two baselines."""
    from personalize.context import make_context
    from personalize.evaluate.playlists import evaluate_nights

    ctx = make_context()
    first = _date_or_default(ctx, date)

    def night(d: dt.date, result: dict) -> None:
        if not as_json:
            arms = result["arms"]
            console.print(
                f"{d}: like rate {arms['playlists'].get('like_rate')} vs random cluster "
                f"{arms['random_cluster'].get('like_rate')} (x{result['like_rate_vs_random_cluster']}), "
                f"popular catalog {arms['popular_catalog'].get('like_rate')}"
            )

    out = evaluate_nights(ctx, first, nights=nights, seed=seed, on_night=night)
    print(json.dumps(out, indent=2, default=str))


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("run-release")(release_command)
    app.command("report")(report_command)
    eval_app.command("playlists")(eval_playlists_command)

"""How well profiles and clusters recover the demo world's ground truth (``personalize eval taste``).

Compared per listener with the truth on the run date (tempo follows each listener's drift): ``ari``
(adjusted Rand index of cluster ids vs true segments), ``tempo_mae_bpm``, ``key_top1`` (preferred key,
pitch class and mode, exactly right), ``family_top3_recall`` (share of the true top-3 families found in
the profile's top 3). Headline figures cover profiled listeners (enough history to fit the clusters);
thin listeners are reported apart, cold ones only counted (they have no evidence to be right about).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score
from sqlalchemy import select

from personalize.context import Context
from personalize.db.models import TasteProfile, TasteRun


def _scores(df: pd.DataFrame) -> dict[str, Any]:
    if df.empty:
        return {"n_listeners": 0}
    fam_true = df["top_families_true"].str.split(";")
    fam_pred = df["top_families_pred"].fillna("").str.split(";")
    recall = [len(set(t) & set(p[:3])) / max(len(t), 1) for t, p in zip(fam_true, fam_pred, strict=True)]
    return {
        "n_listeners": len(df),
        "ari": round(float(adjusted_rand_score(df["segment_id"], df["cluster_id"])), 4),
        "tempo_mae_bpm": round(float((df["tempo_bpm_pred"] - df["tempo_bpm_true"]).abs().mean()), 3),
        "key_top1": round(
            float(((df["key_pc_pred"] == df["key_pc_true"]) & (df["mode_pred"] == df["mode_true"])).mean()), 4
        ),
        "family_top3_recall": round(float(np.mean(recall)), 4),
    }


def evaluate(ctx: Context, run_date: dt.date, truth_path: Path | None = None) -> dict[str, Any]:
    """Scores of ``run_date``'s profiles and clusters against the simulator's ground truth."""
    from personalize.simulate.truth import load_truth

    truth = load_truth(truth_path or ctx.settings.data_dir)
    true_now = truth.at(run_date)
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(
                TasteProfile.listener_id,
                TasteProfile.status,
                TasteProfile.cluster_id,
                TasteProfile.tempo_bpm,
                TasteProfile.key_pc,
                TasteProfile.mode,
                TasteProfile.top_families,
            ).where(TasteProfile.run_date == run_date)
        ).all()
        taste_run = conn.execute(
            select(TasteRun.k, TasteRun.k_criterion).where(TasteRun.run_date == run_date)
        ).one_or_none()
    if not rows or taste_run is None:
        raise LookupError(
            f"no clustered profiles for {run_date}: run `personalize profile` and `personalize cluster`"
        )
    pred = pd.DataFrame(
        rows, columns=["listener_id", "status", "cluster_id", "tempo_bpm", "key_pc", "mode", "top_families"]
    )
    merged = pred.merge(
        true_now[["listener_id", "segment_id", "tempo_bpm", "key_pc", "mode", "top_families"]],
        on="listener_id",
        how="inner",
        suffixes=("_pred", "_true"),
    )
    n_no_truth = len(pred) - len(merged)
    profiled = merged[merged["status"] == "profiled"]
    thin = merged[merged["status"] == "thin"]
    with_history = merged[merged["status"] != "cold"]
    return {
        "run_date": run_date.isoformat(),
        "world": {
            k: truth.world.get(k)
            for k in ("seed", "overlap", "listeners", "days", "end_date")
            if k in truth.world
        },
        **_scores(profiled),
        "n_segments": int(true_now["segment_id"].nunique()),
        "k": int(taste_run.k),
        "k_criterion": taste_run.k_criterion,
        "thin": _scores(thin),
        "with_history": _scores(with_history),
        "ari_all_listeners": round(float(adjusted_rand_score(merged["segment_id"], merged["cluster_id"])), 4)
        if len(merged)
        else None,
        "n_cold": int((merged["status"] == "cold").sum()),
        "n_profiles_without_truth": int(n_no_truth),
    }

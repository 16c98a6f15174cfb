-- Engagement per day with generated tracks versus catalog tracks: plays, likes, skips, how much of each
-- track was heard (completion 0..1); like and skip rates are per listen (a play, complete or skip event).
-- One row per day (UTC) and track source (catalog | generated).
-- PostgreSQL variant of v_engagement_by_source.sql: the UTC calendar day of a timestamp is written differently.
CREATE VIEW v_engagement_by_source AS
SELECT
    CAST(e.ts AT TIME ZONE 'UTC' AS date) AS day,
    t.source,
    COUNT(DISTINCT e.listener_id) AS listeners,
    COUNT(*) AS events,
    SUM(CASE WHEN e.kind IN ('play', 'complete') THEN 1 ELSE 0 END) AS plays,
    SUM(CASE WHEN e.kind = 'like' THEN 1 ELSE 0 END) AS likes,
    SUM(CASE WHEN e.kind = 'skip' THEN 1 ELSE 0 END) AS skips,
    1.0 * SUM(CASE WHEN e.kind = 'like' THEN 1 ELSE 0 END)
        / NULLIF(SUM(CASE WHEN e.kind IN ('play', 'complete', 'skip') THEN 1 ELSE 0 END), 0) AS like_rate,
    1.0 * SUM(CASE WHEN e.kind = 'skip' THEN 1 ELSE 0 END)
        / NULLIF(SUM(CASE WHEN e.kind IN ('play', 'complete', 'skip') THEN 1 ELSE 0 END), 0) AS skip_rate,
    AVG(CASE
        WHEN e.kind NOT IN ('play', 'complete', 'skip') OR t.duration_s <= 0 THEN NULL
        WHEN e.ms_played >= t.duration_s * 1000.0 THEN 1.0
        ELSE e.ms_played / (t.duration_s * 1000.0)
    END) AS mean_completion
FROM listening_events e
JOIN tracks t ON t.track_id = e.track_id
GROUP BY CAST(e.ts AT TIME ZONE 'UTC' AS date), t.source

-- Generation per night: how many tracks were planned, written, verified, rendered, and what they sound like.
-- One row per run_date. Failed = the generator missed its controls on every allowed attempt.
CREATE VIEW v_generation_daily AS
SELECT
    p.run_date,
    COUNT(DISTINCT p.cluster_id) AS clusters,
    COUNT(*) AS tracks_planned,
    SUM(CASE WHEN p.status = 'generated' THEN 1 ELSE 0 END) AS tracks_generated,
    SUM(CASE WHEN p.status = 'failed' THEN 1 ELSE 0 END) AS tracks_failed,
    SUM(CASE WHEN t.audio_uri IS NOT NULL THEN 1 ELSE 0 END) AS tracks_rendered,
    AVG(CASE WHEN p.status = 'generated' THEN p.attempts END) AS mean_attempts,
    SUM(CASE WHEN t.audio_uri IS NOT NULL THEN t.duration_s ELSE 0 END) / 60.0 AS audio_minutes,
    AVG(t.loudness_lufs) AS mean_loudness_lufs,
    MAX(t.true_peak_dbtp) AS max_true_peak_dbtp
FROM track_plans p
LEFT JOIN tracks t ON t.track_id = p.track_id
GROUP BY p.run_date

-- Control fidelity per night and taste cluster: did the generated tracks come out in the key, tempo,
-- instrumentation and density they were asked for? Shares are 0..1; tempo error in BPM.
CREATE VIEW v_fidelity_by_cluster AS
SELECT
    run_date,
    cluster_id,
    COUNT(*) AS tracks,
    AVG(CASE WHEN key_ok THEN 1.0 ELSE 0.0 END) AS key_accuracy,
    AVG(CASE WHEN programs_ok THEN 1.0 ELSE 0.0 END) AS instruments_accuracy,
    AVG(CASE WHEN density_ok THEN 1.0 ELSE 0.0 END) AS density_accuracy,
    AVG(ABS(measured_tempo_bpm - tempo_bpm)) AS tempo_mae_bpm,
    AVG(in_range_share) AS mean_in_range_share,
    AVG(attempts) AS mean_attempts
FROM track_plans
WHERE status = 'generated'
GROUP BY run_date, cluster_id

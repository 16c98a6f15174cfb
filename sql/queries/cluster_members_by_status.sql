-- Question: on a given night, what does one cluster like, and how many of its listeners have a full
-- history (profiled), a thin one, or none at all (cold, given this cluster as their default)?
-- Parameters: run_date, cluster_id.
SELECT
    s.cluster_id,
    s.tempo_bpm,
    s.key_name,
    s.top_families,
    s.density_nps,
    t.status,
    COUNT(*) AS n_listeners,
    AVG(t.tempo_bpm) AS mean_listener_tempo_bpm
FROM v_cluster_summary s
JOIN v_listener_taste t ON t.run_date = s.run_date AND t.cluster_id = s.cluster_id
WHERE s.run_date = :run_date AND s.cluster_id = :cluster_id
GROUP BY s.cluster_id, s.tempo_bpm, s.key_name, s.top_families, s.density_nps, t.status
ORDER BY t.status

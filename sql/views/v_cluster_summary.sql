-- Taste clusters per run date in readable units: size and share of listeners, tempo, key, top instrument
-- families, density, silhouette, whether the cluster is new that night, and how k was chosen.
CREATE VIEW v_cluster_summary AS
SELECT
    c.run_date,
    c.cluster_id,
    c.size,
    c.size * 1.0 / NULLIF(r.n_listeners, 0) AS share_of_listeners,
    c.n_profiled,
    c.tempo_bpm,
    c.key_name,
    c.mode,
    c.top_families,
    c.density AS density_nps,
    c.silhouette,
    c.is_new,
    c.match_distance,
    r.k,
    r.k_criterion,
    r.previous_date
FROM clusters c
JOIN taste_runs r ON r.run_date = c.run_date

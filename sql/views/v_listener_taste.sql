-- Each listener's taste per run date (status profiled / thin / cold, tempo, preferred key, top families,
-- density) beside the taste of the cluster they were assigned to.
CREATE VIEW v_listener_taste AS
SELECT
    p.run_date,
    p.listener_id,
    p.status,
    p.n_events,
    p.tempo_bpm,
    p.tempo_spread AS tempo_spread_log2,
    p.key_name,
    p.major_share,
    p.top_families,
    p.density AS density_nps,
    p.cluster_id,
    c.tempo_bpm AS cluster_tempo_bpm,
    c.key_name AS cluster_key_name,
    c.top_families AS cluster_top_families
FROM taste_profiles p
LEFT JOIN clusters c ON c.run_date = p.run_date AND c.cluster_id = p.cluster_id

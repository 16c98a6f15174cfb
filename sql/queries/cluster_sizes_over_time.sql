-- Question: how big was each taste cluster night by night, and when did each one first appear?
-- Follows clusters by their stable id (the same id is the same taste from one night to the next).
SELECT
    run_date,
    cluster_id,
    size,
    share_of_listeners,
    tempo_bpm,
    key_name,
    top_families,
    MIN(run_date) OVER (PARTITION BY cluster_id) AS first_seen
FROM v_cluster_summary
ORDER BY cluster_id, run_date

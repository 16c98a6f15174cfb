-- Question: which listeners are in a different cluster on one date than on another, and how did their
-- tempo and key change?
-- Parameters: from_date, to_date (any two run dates, not only consecutive ones).
SELECT
    a.listener_id,
    a.cluster_id AS from_cluster_id,
    b.cluster_id AS to_cluster_id,
    a.tempo_bpm AS from_tempo_bpm,
    b.tempo_bpm AS to_tempo_bpm,
    a.key_name AS from_key_name,
    b.key_name AS to_key_name
FROM taste_profiles a
JOIN taste_profiles b ON b.listener_id = a.listener_id
WHERE a.run_date = :from_date
  AND b.run_date = :to_date
  AND a.cluster_id <> b.cluster_id
ORDER BY a.listener_id

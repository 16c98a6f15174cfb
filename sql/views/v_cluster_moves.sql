-- Listeners who moved to another cluster between their previous profile and this one (one row per move).
CREATE VIEW v_cluster_moves AS
SELECT listener_id, from_date, to_date, from_cluster_id, to_cluster_id
FROM (
    SELECT
        listener_id,
        LAG(run_date) OVER (PARTITION BY listener_id ORDER BY run_date) AS from_date,
        run_date AS to_date,
        LAG(cluster_id) OVER (PARTITION BY listener_id ORDER BY run_date) AS from_cluster_id,
        cluster_id AS to_cluster_id
    FROM taste_profiles
    WHERE cluster_id IS NOT NULL
) m
WHERE from_date IS NOT NULL AND from_cluster_id <> to_cluster_id

-- How many listeners stayed in or flowed between clusters from one run date to the next (stayers included:
-- from_cluster_id = to_cluster_id).
CREATE VIEW v_cluster_flows AS
SELECT from_date, to_date, from_cluster_id, to_cluster_id, COUNT(*) AS n_listeners
FROM (
    SELECT
        LAG(run_date) OVER (PARTITION BY listener_id ORDER BY run_date) AS from_date,
        run_date AS to_date,
        LAG(cluster_id) OVER (PARTITION BY listener_id ORDER BY run_date) AS from_cluster_id,
        cluster_id AS to_cluster_id
    FROM taste_profiles
    WHERE cluster_id IS NOT NULL
) m
WHERE from_date IS NOT NULL
GROUP BY from_date, to_date, from_cluster_id, to_cluster_id

-- Question: from one night to the next, what share of each cluster's listeners stayed, and where did the
-- others go?
SELECT
    from_date,
    to_date,
    from_cluster_id,
    to_cluster_id,
    n_listeners,
    n_listeners * 1.0 / SUM(n_listeners) OVER (PARTITION BY from_date, to_date, from_cluster_id) AS share
FROM v_cluster_flows
ORDER BY from_date, from_cluster_id, n_listeners DESC

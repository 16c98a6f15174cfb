-- Playlist coverage per night: of the listeners profiled for the date, how many got a fresh published
-- playlist, and how full those playlists are.
CREATE VIEW v_playlist_coverage AS
SELECT
    tp.run_date,
    COUNT(*) AS listeners,
    SUM(CASE WHEN pl.id IS NOT NULL THEN 1 ELSE 0 END) AS listeners_with_playlist,
    AVG(CASE WHEN pl.id IS NOT NULL THEN 1.0 ELSE 0.0 END) AS coverage,
    AVG(pl_items.n_items) AS mean_items
FROM taste_profiles tp
LEFT JOIN playlists pl
    ON pl.listener_id = tp.listener_id AND pl.run_date = tp.run_date AND pl.status = 'published'
LEFT JOIN (
    SELECT playlist_id, COUNT(*) AS n_items FROM playlist_items GROUP BY playlist_id
) pl_items ON pl_items.playlist_id = pl.id
GROUP BY tp.run_date

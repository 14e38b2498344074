-- V4: vacuum the queue tables sooner.
--
-- A queue changes constantly: every claim leaves a dead row version, and a dead entry at the
-- head of the claim index that later claims step over until VACUUM removes it. PostgreSQL's
-- defaults wait until 20% of a table is dead (10% for ANALYZE); on a queue of a million jobs
-- that is 200,000 dead entries in front of every claim. Storage parameters only: no data moves.

ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02,
                      autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE download_queue SET (autovacuum_vacuum_scale_factor = 0.05,
                                autovacuum_analyze_scale_factor = 0.05);

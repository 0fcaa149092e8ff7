\set k random(1000000, 1099999)
SELECT value FROM lk WHERE key = :k;

-- etcd_fdw 0.1.0 -> 0.2.0 (ALTER EXTENSION etcd_fdw UPDATE TO '0.2.0').
-- Every SQL object added or changed by 0.2.0 goes here, so that an updated
-- installation equals a fresh CREATE EXTENSION (tests/test_upgrade.py
-- compares the two).
\echo Use "ALTER EXTENSION etcd_fdw UPDATE" to load this file. \quit

CREATE FUNCTION "etcd_fdw_version"() RETURNS TEXT
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_fdw_version_wrapper';

-- etcd_fdw_get_connections() shows the endpoint in use.
DROP FUNCTION "etcd_fdw_get_connections"();
CREATE FUNCTION "etcd_fdw_get_connections"() RETURNS TABLE (
	"server_name" TEXT,
	"user_name" TEXT,
	"endpoints" TEXT,
	"endpoint" TEXT,
	"connects" bigint
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_fdw_get_connections_wrapper';

-- etcd's API in SQL (src/api/).
CREATE FUNCTION "etcd_revision"("server" name) RETURNS bigint
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_revision_wrapper';

-- leases (src/api/lease.rs).
CREATE FUNCTION "etcd_lease_grant"("server" name, "ttl_seconds" bigint) RETURNS bigint
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_lease_grant_wrapper';

CREATE FUNCTION "etcd_lease_keepalive"("server" name, "lease" bigint) RETURNS bigint
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_lease_keepalive_wrapper';

CREATE FUNCTION "etcd_lease_revoke"("server" name, "lease" bigint) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_lease_revoke_wrapper';

CREATE FUNCTION "etcd_lease_info"("server" name, "lease" bigint) RETURNS TABLE (
	"ttl" bigint,
	"granted_ttl" bigint,
	"keys" text[]
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_lease_info_wrapper';

CREATE FUNCTION "etcd_leases"("server" name) RETURNS SETOF bigint
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_leases_wrapper';

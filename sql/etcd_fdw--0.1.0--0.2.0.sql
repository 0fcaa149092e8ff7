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

-- Everyday key-value functions (src/api/kv.rs).
CREATE FUNCTION "etcd_get"("server" name, "key" TEXT) RETURNS TEXT
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_get_wrapper';

CREATE FUNCTION "etcd_get_bytea"("server" name, "key" TEXT) RETURNS bytea
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_get_bytea_wrapper';

CREATE FUNCTION "etcd_put"("server" name, "key" TEXT, "value" TEXT, "lease" bigint DEFAULT 0) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_put_wrapper';

CREATE FUNCTION "etcd_put"("server" name, "key" TEXT, "value" bytea, "lease" bigint DEFAULT 0) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_put_bytea_wrapper';

CREATE FUNCTION "etcd_delete"("server" name, "key" TEXT, "range_end" TEXT DEFAULT NULL, "allow_all" bool DEFAULT false) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_delete_wrapper';

CREATE FUNCTION "etcd_delete_prefix"("server" name, "prefix" TEXT, "allow_all" bool DEFAULT false) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_delete_prefix_wrapper';

-- cluster: members, per-endpoint status, alarms, compaction, certificates
-- (src/api/cluster.rs, src/api/certificates.rs).
CREATE FUNCTION "etcd_members"("server" name) RETURNS TABLE (
	"id" TEXT,
	"name" TEXT,
	"peer_urls" TEXT[],
	"client_urls" TEXT[],
	"is_learner" bool
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_members_wrapper';

CREATE FUNCTION "etcd_status"("server" name) RETURNS TABLE (
	"endpoint" TEXT,
	"reachable" bool,
	"version" TEXT,
	"db_size" bigint,
	"db_size_in_use" bigint,
	"leader" TEXT,
	"is_leader" bool,
	"raft_term" bigint,
	"raft_index" bigint,
	"errors" TEXT[]
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_status_wrapper';

CREATE FUNCTION "etcd_alarms"("server" name) RETURNS TABLE (
	"member_id" TEXT,
	"alarm" TEXT
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_alarms_wrapper';

CREATE FUNCTION "etcd_compact"("server" name, "revision" bigint, "physical" bool DEFAULT false) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_compact_wrapper';
REVOKE EXECUTE ON FUNCTION etcd_compact(name, bigint, boolean) FROM PUBLIC;

CREATE FUNCTION "etcd_certificates"("server" name) RETURNS TABLE (
	"source" TEXT,
	"subject" TEXT,
	"issuer" TEXT,
	"not_before" timestamp with time zone,
	"not_after" timestamp with time zone,
	"days_left" INT
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_certificates_wrapper';

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

-- watch: etcd's change feed (src/api/watch.rs).
CREATE FUNCTION "etcd_watch"(
	"server" name,
	"prefix" text,
	"start_revision" bigint DEFAULT 0,
	"max_events" INT DEFAULT 1000,
	"timeout_ms" INT DEFAULT 10000
) RETURNS TABLE (
	"revision" bigint,
	"event" TEXT,
	"key" text,
	"value" text,
	"prev_value" text,
	"create_revision" bigint,
	"mod_revision" bigint,
	"version" bigint,
	"lease" bigint
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_watch_wrapper';

CREATE FUNCTION "etcd_watch_bytea"(
	"server" name,
	"prefix" text,
	"start_revision" bigint DEFAULT 0,
	"max_events" INT DEFAULT 1000,
	"timeout_ms" INT DEFAULT 10000
) RETURNS TABLE (
	"revision" bigint,
	"event" TEXT,
	"key" bytea,
	"value" bytea,
	"prev_value" bytea,
	"create_revision" bigint,
	"mod_revision" bigint,
	"version" bigint,
	"lease" bigint
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_watch_bytea_wrapper';

-- Patroni's cluster in SQL (src/api/patroni.rs).
CREATE FUNCTION "etcd_patroni_members"(
	"server" name,
	"scope" text,
	"namespace" text DEFAULT '/service/'
) RETURNS TABLE (
	"name" text,
	"role" text,
	"state" text,
	"host" text,
	"port" INT,
	"api_url" text,
	"timeline" bigint,
	"lsn" pg_lsn,
	"lag_bytes" bigint,
	"is_leader" bool,
	"version" text,
	"lease_ttl_left" bigint,
	"mod_revision" bigint
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_patroni_members_wrapper';

CREATE FUNCTION "etcd_patroni_cluster"(
	"server" name,
	"scope" text,
	"namespace" text DEFAULT '/service/'
) RETURNS TABLE (
	"leader" text,
	"system_identifier" text,
	"config" jsonb,
	"optime" pg_lsn,
	"failover" jsonb,
	"sync" jsonb,
	"history" jsonb,
	"members" INT,
	"revision" bigint
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_patroni_cluster_wrapper';

CREATE FUNCTION "etcd_patroni_edit_config"(
	"server" name,
	"scope" text,
	"patch" jsonb,
	"namespace" text DEFAULT '/service/'
) RETURNS jsonb
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'etcd_patroni_edit_config_wrapper';

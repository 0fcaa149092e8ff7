//! SQL-callable functions: the handler and validator declarations, the
//! DDL event trigger, and connection-cache introspection.

use pgrx::prelude::*;

use crate::api::TextDatum;
use crate::connection;

pgrx::extension_sql!(
    r#"
CREATE FUNCTION etcd_fdw_handler() RETURNS fdw_handler
    AS 'MODULE_PATHNAME', 'etcd_fdw_handler' LANGUAGE C STRICT;
COMMENT ON FUNCTION etcd_fdw_handler() IS 'etcd foreign data wrapper handler';

CREATE FUNCTION etcd_fdw_validator(text[], oid) RETURNS void
    AS 'MODULE_PATHNAME', 'etcd_fdw_validator' LANGUAGE C STRICT;
COMMENT ON FUNCTION etcd_fdw_validator(text[], oid) IS 'etcd foreign data wrapper option validator';
"#,
    name = "fdw_functions",
);

/// Check a foreign table's columns and rowid_column (used by the DDL event
/// trigger; harmless to call on any relation).
#[pg_extern]
fn etcd_fdw_check_table(relid: pg_sys::Oid) {
    crate::fdw::check_table_ddl(relid);
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION etcd_fdw_ddl_check() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT objid FROM pg_event_trigger_ddl_commands()
             WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass
    LOOP
        PERFORM @extschema@.etcd_fdw_check_table(r.objid);
    END LOOP;
END
$$;

CREATE EVENT TRIGGER etcd_fdw_ddl_check ON ddl_command_end
    WHEN TAG IN ('CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE')
    EXECUTE FUNCTION etcd_fdw_ddl_check();
"#,
    name = "ddl_event_trigger",
    requires = [etcd_fdw_check_table],
);

/// The etcd connections this backend keeps open (a non-superuser: only
/// those of their own user mappings): the endpoints of the
/// server, the one in use, and how many times the connection was
/// (re)established.
#[pg_extern]
fn etcd_fdw_get_connections() -> TableIterator<
    'static,
    (
        name!(server_name, TextDatum),
        name!(user_name, TextDatum),
        name!(endpoints, String),
        name!(endpoint, String),
        name!(connects, i64),
    ),
> {
    // SAFETY: superuser() and GetUserId() have no preconditions.
    let (all, me) = unsafe { (pg_sys::superuser(), u32::from(pg_sys::GetUserId())) };
    let rows: Vec<_> = connection::list()
        .into_iter()
        // a non-superuser sees only their own connections
        .filter(|c| all || c.user_oid == me)
        .map(|c| {
            // SAFETY: GetUserNameFromId with noerr = true returns NULL for
            // an unknown role, else the name in the database encoding.
            let user_name = unsafe {
                let p = pg_sys::GetUserNameFromId(pg_sys::Oid::from(c.user_oid), true);
                if p.is_null() {
                    TextDatum::from_server_bytes(c.user_oid.to_string().as_bytes())
                } else {
                    TextDatum::from_server_bytes(std::ffi::CStr::from_ptr(p).to_bytes())
                }
            };
            (
                // Names are text in the database encoding, as every text
                // result (a non-ASCII server name in a LATIN1 database).
                TextDatum::from_catalog_name(&c.server_name),
                user_name,
                c.endpoints,
                c.endpoint,
                c.connects,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Close every etcd connection of this backend; true if there was one.
#[pg_extern]
fn etcd_fdw_disconnect_all() -> bool {
    connection::disconnect_all()
}

/// The version of the loaded library (the `.so`), to compare with the SQL
/// objects' version in `pg_extension.extversion` after an upgrade: they
/// differ until `ALTER EXTENSION etcd_fdw UPDATE` has run.
#[pg_extern(immutable, parallel_safe)]
fn etcd_fdw_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

//! IMPORT FOREIGN SCHEMA: one foreign table per key segment under the
//! remote schema name (a key prefix).  The segments are found by
//! `etcd_fdw_core::import::SegmentScan` with keys-only requests at one
//! revision; PostgreSQL itself applies LIMIT TO / EXCEPT to the returned
//! statements (by table name) and creates them in the local schema.

use std::ffi::CString;

use etcd_fdw_core::client::{EtcdError, MAX_RESPONSE_BYTES};
use etcd_fdw_core::etcd_client::GetOptions;
use etcd_fdw_core::import::{
    self, ImportOptionError, ImportOptions, Layout, SegmentScan, SkipReason,
};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{pg_sys, PgList, PgLogLevel, PgSqlErrorCode};

use crate::catalog::{self, deflist_to_pairs, ServerInfo};
use crate::columns::display_key;
use crate::connection;
use crate::encoding;
use crate::error::{etcd_error, option_error, raise_with};

/// `ImportForeignSchema`: the CREATE FOREIGN TABLE statements (palloc'd C
/// strings in the server encoding) for `stmt`.
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn import_foreign_schema(
    stmt: *mut pg_sys::ImportForeignSchemaStmt,
    server_oid: pg_sys::Oid,
) -> *mut pg_sys::List {
    // SAFETY (the whole function): PostgreSQL passes a valid statement
    // whose strings and option list live for the call; the returned list
    // and its strings are palloc'd in the current memory context.
    let opts =
        import::parse_options(&deflist_to_pairs((*stmt).options)).unwrap_or_else(|e| match e {
            ImportOptionError::Invalid(e) => option_error(&e),
            ImportOptionError::Unknown(_) => raise_with(
                PgSqlErrorCode::ERRCODE_FDW_INVALID_OPTION_NAME,
                e.to_string(),
                None,
                e.hint(),
            ),
        });
    let remote = encoding::server_cstr((*stmt).remote_schema);
    let prefix = opts.prefix.clone().unwrap_or(remote);
    // The caller's user mapping (PostgreSQL checked USAGE on the server).
    let server = catalog::server_info(server_oid, pg_sys::GetUserId());
    if opts.layout == Layout::Patroni {
        return import_patroni(stmt, &server, &prefix, &opts);
    }
    let max_name = pg_sys::NAMEDATALEN as usize - 1;
    // In a database of another encoding, name lengths are checked once
    // the names are converted (below).
    let utf8_db = encoding::db_text_is_utf8_bytes();
    let scan_max = if utf8_db { max_name } else { usize::MAX };
    let mut scan = find_segments(&server, &prefix, &opts.separator, scan_max);
    if !utf8_db {
        scan.retain_tables(|t| {
            let name = in_db_encoding(&t.name).ok_or(SkipReason::NotInDatabaseEncoding)?;
            in_db_encoding(&t.prefix).ok_or(SkipReason::NotInDatabaseEncoding)?;
            if name.len() > max_name {
                return Err(SkipReason::TooLong);
            }
            Ok(())
        });
    }
    if !scan.any_key {
        raise_with(
            PgSqlErrorCode::ERRCODE_FDW_SCHEMA_NOT_FOUND,
            format!(
                "etcd server \"{}\" has no keys under prefix \"{}\"",
                server.server_name,
                display_key(prefix.as_bytes())
            ),
            Some(format!(
                "IMPORT FOREIGN SCHEMA reads the remote schema name as a key prefix; read at revision {}.",
                scan.revision()
            )),
            None,
        );
    }
    notices(&scan, &prefix, &opts.separator, max_name);

    let quote = |s: &str| quote_identifier(s);
    let schema = quote(&encoding::server_cstr((*stmt).local_schema));
    let server_q = quote(&server.server_name);
    let mut list = PgList::<std::ffi::c_char>::new();
    for table in &scan.tables {
        let sql = import::create_table_sql(&schema, &server_q, table, &opts, &quote);
        let bytes = encoding::utf8_to_server(sql.as_bytes()).into_owned();
        // No NUL: segments holding one are skipped, names and options are
        // C strings.
        let c = CString::new(bytes).unwrap_or_else(|_| {
            raise_with(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "etcd_fdw: a generated statement holds a zero byte".into(),
                None,
                None,
            )
        });
        list.push(pg_sys::pstrdup(c.as_ptr()));
    }
    list.into_pg()
}

/// Read the segments under `prefix` (keys only, paged at the first page's
/// revision, jumping over each segment's keys once one is seen).
fn find_segments(
    server: &ServerInfo,
    prefix: &str,
    separator: &str,
    max_name: usize,
) -> SegmentScan {
    let mut scan = SegmentScan::new(prefix.as_bytes(), separator.as_bytes(), max_name);
    let what = |scan: &SegmentScan| {
        let at = match scan.revision() {
            0 => String::new(),
            r => format!(" at revision {r}"),
        };
        format!(
            "importing the keys under prefix \"{}\" from etcd server \"{}\" ({}){at}",
            display_key(prefix.as_bytes()),
            server.server_name,
            server.options.endpoints_display()
        )
    };
    while let Some(req) = scan.next_request() {
        let result = connection::try_with_retry(server, |mut kv| {
            let req = req.clone();
            async move {
                let opts = req.get_options();
                kv.get(req.key, Some(opts)).await.map_err(EtcdError::from)
            }
        });
        match result {
            Ok(mut resp) => {
                let revision = resp.header().map_or(0, |h| h.revision());
                let more = resp.more();
                let kvs = resp.take_kvs();
                scan.accept(kvs.iter().map(|kv| kv.key()), more, revision);
            }
            Err(e) if e.response_too_large().is_some() && scan.shrink() => {}
            Err(e) if e.response_too_large().is_some() => raise_with(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "an etcd key is larger than the {} MiB etcd_fdw accepts in one answer",
                    MAX_RESPONSE_BYTES >> 20
                ),
                Some(what(&scan)),
                None,
            ),
            Err(e) => etcd_error(&e, &what(&scan)),
        }
    }
    scan
}

/// NOTICEs for what was not imported: keys right under the prefix, and
/// segments that cannot be table names.
fn notices(scan: &SegmentScan, prefix: &str, separator: &str, max_name: usize) {
    let list = |items: &[Vec<u8>], count: u64| {
        let mut s = items
            .iter()
            .map(|k| format!("\"{}\"", display_key(k)))
            .collect::<Vec<_>>()
            .join(", ");
        if count > items.len() as u64 {
            s.push_str(&format!(" and {} more", count - items.len() as u64));
        }
        s
    };
    let p = display_key(prefix.as_bytes());
    if scan.direct.count > 0 {
        let n = scan.direct.count;
        notice(
            format!(
                "{n} etcd key{} under prefix \"{p}\" without a further separator \"{}\" {} not imported",
                if n == 1 { "" } else { "s" },
                display_key(separator.as_bytes()),
                if n == 1 { "was" } else { "were" },
            ),
            format!("Keys: {}.", list(&scan.direct.first, n)),
            format!("A foreign table with the option prefix '{p}' reads them (with the keys of every segment)."),
        );
    }
    for reason in SkipReason::ALL {
        let Some((_, sample)) = scan.skipped.iter().find(|(r, _)| *r == reason) else {
            continue;
        };
        let n = sample.count;
        let hint = match reason {
            SkipReason::Empty if !prefix.is_empty() && !prefix.ends_with(separator) => format!(
                "The remote schema is a key prefix: end it with the separator (\"{p}{}\").",
                display_key(separator.as_bytes())
            ),
            _ => "A foreign table created by hand with one of these prefixes (option prefix) reads its keys.".into(),
        };
        notice(
            format!(
                "{n} key segment{} under prefix \"{p}\" skipped: {}",
                if n == 1 { "" } else { "s" },
                reason.describe(max_name)
            ),
            format!("Key prefixes: {}.", list(&sample.first, n)),
            hint,
        );
    }
}

/// `s` in the database encoding, or `None` when it has characters the
/// encoding cannot hold (no ERROR, unlike `encoding::utf8_to_server`).
fn in_db_encoding(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || encoding::db_text_is_utf8_bytes() {
        return Some(s.as_bytes().to_vec());
    }
    let utf8 = pg_sys::pg_enc::PG_UTF8 as i32;
    let db = encoding::db_encoding() as i32;
    let len = i32::try_from(s.len()).ok()?;
    // Room for the worst case growth and the terminating NUL (the
    // function converts less when the buffer is smaller).
    let mut dest = vec![0u8; s.len() * pg_sys::MAX_CONVERSION_GROWTH as usize + 1];
    let mut src = s.as_bytes().to_vec();
    // SAFETY: a catalog lookup of the default conversion; the conversion
    // reads `len` bytes of `src` and writes at most `dest.len()` bytes
    // (NUL-terminated); with noError it stops at the first character it
    // cannot convert and returns how many input bytes it converted.
    unsafe {
        let proc_ = pg_sys::FindDefaultConversionProc(utf8, db);
        if proc_ == pg_sys::InvalidOid {
            return None;
        }
        let converted = pg_sys::pg_do_encoding_conversion_buf(
            proc_,
            utf8,
            db,
            src.as_mut_ptr(),
            len,
            dest.as_mut_ptr(),
            dest.len() as i32,
            true,
        );
        if converted != len {
            return None;
        }
    }
    let end = dest.iter().position(|&b| b == 0).unwrap_or(dest.len());
    dest.truncate(end);
    Some(dest)
}

fn notice(message: String, detail: String, hint: String) {
    let conv = |t: String| encoding::for_server(&t).into_owned();
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        conv(message),
        "etcd_fdw",
    )
    .set_detail(conv(detail))
    .set_hint(conv(hint))
    .report(PgLogLevel::NOTICE);
}

/// PostgreSQL's `quote_identifier` (quotes unless the name is a plain
/// lower-case identifier and no reserved keyword).  The name is UTF-8; the
/// whole statement is converted to the server encoding afterwards (only
/// ASCII bytes decide the quoting).
fn quote_identifier(name: &str) -> String {
    let c = CString::new(name).unwrap_or_else(|_| {
        raise_with(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "etcd_fdw: a name holds a zero byte".into(),
            None,
            None,
        )
    });
    // SAFETY: quote_identifier returns its argument or a palloc'd,
    // NUL-terminated copy; both are read before `c` is dropped.
    unsafe {
        let q = pg_sys::quote_identifier(c.as_ptr());
        std::ffi::CStr::from_ptr(q).to_string_lossy().into_owned()
    }
}

/// `layout 'patroni'`: the prefix is a Patroni cluster's
/// (`<namespace><scope>/`); its tables are `members` and the single keys,
/// whether or not each exists yet (failover, sync and history come and
/// go).  The cluster must have at least one key; keys the layout does not
/// read get a NOTICE.
unsafe fn import_patroni(
    stmt: *mut pg_sys::ImportForeignSchemaStmt,
    server: &ServerInfo,
    prefix: &str,
    opts: &ImportOptions,
) -> *mut pg_sys::List {
    let what = || {
        format!(
            "importing Patroni cluster \"{}\" from etcd server \"{}\" ({})",
            display_key(prefix.as_bytes()),
            server.server_name,
            server.options.endpoints_display()
        )
    };
    // A Patroni cluster has a handful of keys: one keys-only read.
    let resp = connection::try_with_retry(server, |mut kv| {
        let prefix = prefix.to_string();
        async move {
            let opts = GetOptions::new().with_prefix().with_keys_only();
            kv.get(prefix, Some(opts)).await.map_err(EtcdError::from)
        }
    })
    .unwrap_or_else(|e| etcd_error(&e, &what()));
    let revision = resp.header().map_or(0, |h| h.revision());
    if resp.kvs().is_empty() {
        raise_with(
            PgSqlErrorCode::ERRCODE_FDW_SCHEMA_NOT_FOUND,
            format!(
                "etcd server \"{}\" has no keys under prefix \"{}\"",
                server.server_name,
                display_key(prefix.as_bytes())
            ),
            Some(format!(
                "With layout 'patroni' the remote schema name is a Patroni cluster's key prefix, e.g. \"/service/<scope>/\"; read at revision {revision}."
            )),
            None,
        );
    }
    let mut others: Vec<String> = Vec::new();
    for kv in resp.kvs() {
        let rest = &kv.key()[prefix.len().min(kv.key().len())..];
        let rest = String::from_utf8_lossy(rest);
        let imported = match rest.strip_prefix("members/") {
            Some(name) => !name.is_empty(),
            None => import::patroni_imports(&rest),
        };
        if !imported {
            others.push(display_key(kv.key()));
        }
    }
    if !others.is_empty() {
        let n = others.len();
        let mut listed = others
            .iter()
            .take(import::LISTED)
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ");
        if n > import::LISTED {
            listed.push_str(&format!(" and {} more", n - import::LISTED));
        }
        notice(
            format!(
                "{n} etcd key{} under Patroni prefix \"{}\" {} not imported by layout 'patroni'",
                if n == 1 { "" } else { "s" },
                display_key(prefix.as_bytes()),
                if n == 1 { "was" } else { "were" },
            ),
            format!("Keys: {listed}."),
            format!(
                "A foreign table with the option prefix '{}' reads every key of the cluster.",
                display_key(prefix.as_bytes())
            ),
        );
    }
    let quote = |s: &str| quote_identifier(s);
    let schema = quote(&encoding::server_cstr((*stmt).local_schema));
    let server_q = quote(&server.server_name);
    let mut list = PgList::<std::ffi::c_char>::new();
    for table in import::patroni_tables(prefix) {
        let sql =
            import::create_patroni_table_sql(&schema, &server_q, &table, opts.metadata, &quote);
        let bytes = encoding::utf8_to_server(sql.as_bytes()).into_owned();
        let Ok(c) = CString::new(bytes) else {
            raise_with(
                PgSqlErrorCode::ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE,
                format!(
                    "the Patroni prefix \"{}\" holds a zero byte",
                    display_key(prefix.as_bytes())
                ),
                None,
                None,
            )
        };
        list.push(pg_sys::pstrdup(c.as_ptr()));
    }
    list.into_pg()
}

//! Turning etcd_fdw's errors into PostgreSQL ERRORs with the right SQLSTATE.
//!
//! `report` raises through pgrx's `ErrorReport`, which unwinds the Rust
//! stack (running destructors) up to the nearest `#[pg_guard]` boundary and
//! then `ereport(ERROR)`s there.

use etcd_fdw_core::client::EtcdError;
use etcd_fdw_core::options::OptionError;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Raise an ERROR.
#[track_caller]
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    raise_with(code, message.into(), None, None)
}

#[track_caller]
pub fn raise_with(
    code: PgSqlErrorCode,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
) -> ! {
    let conv = |t: String| crate::encoding::for_server(&t).into_owned();
    let mut r = ErrorReport::new(code, conv(message), "etcd_fdw");
    if let Some(d) = detail {
        r = r.set_detail(conv(d));
    }
    if let Some(h) = hint {
        r = r.set_hint(conv(h));
    }
    r.report(PgLogLevel::ERROR);
    unreachable!("ERROR level report returned")
}

/// Emit a WARNING with a hint; execution continues.
pub fn warning_with_hint(code: PgSqlErrorCode, message: String, hint: String) {
    let conv = |t: String| crate::encoding::for_server(&t).into_owned();
    ErrorReport::new(code, conv(message), "etcd_fdw")
        .set_hint(conv(hint))
        .report(PgLogLevel::WARNING);
}

/// Raise an option validation error.
#[track_caller]
pub fn option_error(e: &OptionError) -> ! {
    let code = match e {
        OptionError::Unknown { .. } => PgSqlErrorCode::ERRCODE_FDW_INVALID_OPTION_NAME,
        OptionError::Missing { .. } => PgSqlErrorCode::ERRCODE_FDW_OPTION_NAME_NOT_FOUND,
        OptionError::Duplicate(_) => PgSqlErrorCode::ERRCODE_FDW_INVALID_OPTION_NAME,
        OptionError::InvalidValue { .. }
        | OptionError::Conflict(..)
        | OptionError::Requires(..) => PgSqlErrorCode::ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE,
    };
    raise_with(code, e.to_string(), None, e.hint())
}

/// The SQLSTATE for an etcd failure.
pub fn etcd_sqlstate(e: &EtcdError) -> PgSqlErrorCode {
    use etcd_fdw_core::tonic::Code;
    match e.root() {
        EtcdError::Connect { .. } | EtcdError::TlsFile { .. } => {
            PgSqlErrorCode::ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION
        }
        EtcdError::Auth { .. } => PgSqlErrorCode::ERRCODE_INVALID_PASSWORD,
        EtcdError::NoUser { .. } | EtcdError::LoginNotPassedOn { .. } => {
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION
        }
        // etcd did not answer within request_timeout: lost to this backend
        // as surely as an unavailable member (08006 too), and retried the
        // same way, by running the statement again.  (A write whose outcome
        // it hides is 08007, see connection::run_once_with; 57014 is kept
        // for cancels.)
        EtcdError::Timeout(_) => PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
        EtcdError::Status { code, message } => match code {
            Code::Unauthenticated => PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            Code::PermissionDenied => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            Code::ResourceExhausted => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            Code::InvalidArgument
                if message.contains("too large") || message.contains("too many") =>
            {
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED
            }
            Code::OutOfRange if e.response_too_large().is_some() => {
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED
            }
            Code::OutOfRange => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            Code::Unavailable | Code::Cancelled => PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            // "requested lease not found": a write naming an unknown or
            // expired lease.
            Code::NotFound if message.contains("lease not found") => {
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT
            }
            _ => PgSqlErrorCode::ERRCODE_FDW_ERROR,
        },
        EtcdError::Other(_) | EtcdError::Refused(_) => PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
        EtcdError::Retried { .. } => unreachable!("root() unwraps Retried"),
    }
}

/// Raise an etcd failure; `context` says what was being done (it names the
/// server and, where there is one, the key).
#[track_caller]
pub fn etcd_error(e: &EtcdError, context: &str) -> ! {
    let attempts = e.attempts();
    let detail = match attempts {
        None => context.to_string(),
        Some(a) => format!("{context}; {}", a.summary()),
    };
    raise_with(
        etcd_sqlstate(e),
        e.root().to_string(),
        Some(detail),
        etcd_hint(e),
    )
}

/// The HINT an etcd failure gets, if any.
pub fn etcd_hint(e: &EtcdError) -> Option<String> {
    let e = e.root();
    match e {
        EtcdError::NoUser { server, .. } => Some(format!(
            "Create a user mapping: CREATE USER MAPPING FOR CURRENT_USER SERVER \"{}\" OPTIONS (username '...', password '...').",
            server.replace('"', "\"\"")
        )),
        EtcdError::LoginNotPassedOn { .. } => Some(
            "A proxy between etcd_fdw and etcd drops the login: etcd's gRPC proxy (3.4 and 3.5) does not pass it on for key-value requests. Connect straight to etcd, or use the proxy only while etcd's authentication is off.".to_string(),
        ),
        EtcdError::Timeout(_) => {
            Some("Increase the server option \"request_timeout\" or check the etcd cluster's health.".to_string())
        }
        EtcdError::Status { message, .. } if message.contains("compacted") => Some(
            "The requested revision was compacted away; read a newer revision (table option \"revision\").".to_string(),
        ),
        EtcdError::Status { message, .. } if message.contains("request is too large") => Some(
            "etcd refuses requests larger than its --max-request-bytes (1.5 MiB by default).".to_string(),
        ),
        EtcdError::Status { message, .. } if message.contains("lease not found") => Some(
            "The lease does not exist or has expired; grant one with etcd_lease_grant().".to_string(),
        ),
        EtcdError::Status { message, .. } if message.contains("too many operations") => Some(
            "Lower the option \"batch_size\" to at most the etcd cluster's --max-txn-ops (128 by default).".to_string(),
        ),
        _ if e.response_too_large().is_some() => Some(format!(
            "etcd_fdw accepts answers of up to {} MiB from etcd.",
            etcd_fdw_core::client::MAX_RESPONSE_BYTES >> 20
        )),
        EtcdError::Status { message, .. } if message.contains("larger than max") => Some(
            "etcd refuses gRPC messages larger than its limit (2 MiB by default).".to_string(),
        ),
        _ => None,
    }
}

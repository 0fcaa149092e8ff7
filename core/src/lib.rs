//! PostgreSQL-independent core of etcd_fdw.
//!
//! * [`options`]: option names, parsing and DDL-time validation;
//! * [`keyrange`]: key range algebra (prefixes, comparisons, IN lists);
//! * [`plan`]: the planner's decision for a scan, encodable into a plan;
//! * [`scan`]: turning a planned scan into paged etcd range requests;
//! * [`writes`]: guarded write operations packed into etcd transactions;
//! * [`outcome`]: a commit whose answer was lost, decided from etcd's history;
//! * [`pending`]: a PostgreSQL transaction's writes until COMMIT (savepoint
//!   levels, the overlay scans merge, the one commit transaction);
//! * [`lease`]: lease ids, TTLs and "no such lease" as the SQL functions show them;
//! * [`import`]: IMPORT FOREIGN SCHEMA (key segments -> foreign tables);
//! * [`client`]: connecting (auth, endpoint order, retries) and errors;
//! * [`tls`]: TLS with OpenSSL (certificates, keys, CAs, the handshake);
//! * [`cluster`]: member ids, per-endpoint status, alarms;
//! * [`certs`]: the certificates of a TLS set-up (files, endpoint chains);
//! * [`watch`]: etcd's change feed (arguments, watched range, events as rows,
//!   a replay's catch-up);
//! * [`patroni`]: Patroni's cluster in etcd (key layout, members, lag, the
//!   dynamic configuration's merge and rules).
//!
//! Everything here is covered by `cargo test -p etcd_fdw_core` without any
//! server.

pub mod certs;
pub mod client;
pub mod cluster;
pub mod import;
pub mod keyrange;
pub mod lease;
pub mod options;
pub mod outcome;
pub mod patroni;
pub mod pending;
pub mod plan;
pub mod retry;
pub mod scan;
pub mod text;
pub mod tls;
pub mod watch;
pub mod writes;

pub use etcd_client;
pub use serde_json;
pub use tonic;

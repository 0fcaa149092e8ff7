//! `rawclient`: the raw etcd-client baseline of the etcd_fdw benchmark.
//!
//! Each subcommand connects exactly like the FDW does
//! (`etcd_fdw_core::client::connect`), performs one warm-up request, then
//! times only the workload itself and prints one JSON object on stdout:
//! `elapsed` (seconds, total), `per_op` (elapsed / repeat, or / ops) and a
//! checksum (`rows`, `bytes`, ...) so the runner can assert that the FDW
//! computed the same answer.
//!
//! Subcommands (all take `--endpoint HOST:PORT`):
//!
//! ```text
//! load     --prefix P --count N [--value-size 100] [--layout scan|plain]
//!          [--base B] [--batch 128] [--inflight 16]
//! scan     --prefix P [--fetch-size 1000] [--repeat K] [--desc] [--limit L] [--single-request]
//!          [--keys-only]
//! lookups  --keys-file F --count N [--concurrency C]
//! count    --prefix P [--repeat K]
//! keylist  --keys-file F [--batch 128] [--repeat K]
//! insert   --prefix P --count N [--value-size 100] [--batch 128]
//! update   --prefix P [--suffix x] [--fetch-size 1000] [--batch 128] [--prev-kv]
//! delete   --prefix P [--fetch-size 1000] [--batch 128] [--prev-kv]
//! ```
//!
//! Key layouts written by `load`:
//! * `scan`:  `P` + (`p/` if i % 100 == 0 else `k/`) + i, i in 0..N, so that
//!   `P p/` holds exactly 1% of the keys (the prefix-scan workload);
//! * `plain`: `P` + (base + i) (`--base`, default 0), e.g. numeric keys
//!   `1000000`..`1099999` for the point-lookup table.
//!
//! Values are `format!("{i:010}")` padded with `v` to `--value-size` bytes.
//! `insert` writes keys `P` + i for i in 1..=N with values of `v` only
//! (what `INSERT ... SELECT P || i, repeat('v', S) FROM generate_series(1, N)`
//! writes).
//!
//! Runtime: a tokio current-thread runtime, like the FDW's per-backend
//! runtime; `lookups --concurrency C` (C > 1) starts C OS threads, each with
//! its own current-thread runtime and its own connection (like C
//! PostgreSQL backends).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_fdw_core::client;
use etcd_fdw_core::etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, KvClient, PutOptions, Txn,
    TxnOp,
};
use etcd_fdw_core::keyrange::{KeyRange, KeySet};
use etcd_fdw_core::options::{parse_server, ServerOptions};
use etcd_fdw_core::scan::{Pager, ScanSpec, SortField};

type Res<T> = Result<T, String>;

const USAGE: &str = "usage: rawclient <load|scan|lookups|count|keylist|insert|update|delete> --endpoint HOST:PORT [options]
  load     --prefix P --count N [--value-size 100] [--layout scan|plain] [--base B] [--batch 128] [--inflight 16]
  scan     --prefix P [--fetch-size 1000] [--repeat K] [--desc] [--limit L] [--keys-only]
  lookups  --keys-file F --count N [--concurrency C] [--mixed]  (--mixed: a get, then a guarded update of the next key)
  count    --prefix P [--repeat K]
  keylist  --keys-file F [--batch 128] [--repeat K]
  insert   --prefix P --count N [--value-size 100] [--batch 128]
  update   --prefix P [--suffix x] [--fetch-size 1000] [--batch 128] [--prev-kv]
  delete   --prefix P [--fetch-size 1000] [--batch 128] [--prev-kv]";

/// `--name value` and `--flag` arguments, parsed by hand.
struct Args {
    vals: HashMap<String, String>,
    flags: Vec<String>,
}

const FLAGS: &[&str] = &["desc", "keys-only", "prev-kv", "single-request", "mixed"];

impl Args {
    fn parse(argv: &[String]) -> Res<Args> {
        let mut vals = HashMap::new();
        let mut flags = Vec::new();
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            if let Some((n, v)) = name.split_once('=') {
                vals.insert(n.to_string(), v.to_string());
            } else if FLAGS.contains(&name) {
                flags.push(name.to_string());
            } else {
                let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                vals.insert(name.to_string(), v.clone());
            }
        }
        Ok(Args { vals, flags })
    }

    fn str(&self, name: &str) -> Res<String> {
        self.vals
            .get(name)
            .cloned()
            .ok_or_else(|| format!("missing --{name}"))
    }

    fn str_or(&self, name: &str, default: &str) -> String {
        self.vals
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    fn num(&self, name: &str, default: Option<u64>) -> Res<u64> {
        match self.vals.get(name) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: not a non-negative integer: {v:?}")),
            None => default.ok_or_else(|| format!("missing --{name}")),
        }
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

/// A JSON object written by hand (numbers and strings only).
#[derive(Default)]
struct Out(Vec<(String, String)>);

impl Out {
    fn num(&mut self, k: &str, v: impl std::fmt::Display) -> &mut Self {
        self.0.push((k.to_string(), v.to_string()));
        self
    }
    fn secs(&mut self, k: &str, d: f64) -> &mut Self {
        self.0.push((k.to_string(), format!("{d:.9}")));
        self
    }
    fn str(&mut self, k: &str, v: &[u8]) -> &mut Self {
        let mut s = String::from("\"");
        for c in String::from_utf8_lossy(v).chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
                c => s.push(c),
            }
        }
        s.push('"');
        self.0.push((k.to_string(), s));
        self
    }
    fn print(&self) {
        let body: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        println!("{{{}}}", body.join(", "));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn server_options(endpoint: &str) -> Res<ServerOptions> {
    parse_server(&[("connstr".to_string(), endpoint.to_string())], &[]).map_err(|e| e.to_string())
}

async fn connect(opts: &ServerOptions) -> Res<Client> {
    client::connect(opts).await.map_err(|e| e.to_string())
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// One cheap request on a fresh connection (HTTP/2 and etcd warm-up).
async fn warm_up(kv: &mut KvClient, key: &[u8]) -> Res<()> {
    kv.get(
        key.to_vec(),
        Some(GetOptions::new().with_limit(1).with_keys_only()),
    )
    .await
    .map_err(err)?;
    Ok(())
}

fn value_for(i: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{i:010}").into_bytes();
    v.resize(size.max(v.len()), b'v');
    v.truncate(size);
    v
}

fn vmhwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Send a txn; fail unless it applied.
async fn txn_ok(kv: &mut KvClient, txn: Txn) -> Res<()> {
    let r = kv.txn(txn).await.map_err(err)?;
    if r.succeeded() {
        Ok(())
    } else {
        Err("transaction guard failed (key exists or changed concurrently)".into())
    }
}

// ---------------------------------------------------------------------------
// load
// ---------------------------------------------------------------------------

async fn cmd_load(a: &Args, opts: &ServerOptions) -> Res<()> {
    let prefix = a.str("prefix")?;
    let count = a.num("count", None)?;
    let size = a.num("value-size", Some(100))? as usize;
    let batch = a.num("batch", Some(128))?.max(1);
    let inflight = a.num("inflight", Some(16))?.max(1) as usize;
    let layout = a.str_or("layout", "scan");
    let base = a.num("base", Some(0))?;
    if layout != "scan" && layout != "plain" {
        return Err(format!("--layout: scan or plain, not {layout:?}"));
    }
    let key = |i: u64| -> Vec<u8> {
        if layout == "scan" {
            let sub = if i % 100 == 0 { "p/" } else { "k/" };
            format!("{prefix}{sub}{i}").into_bytes()
        } else {
            format!("{prefix}{}", base + i).into_bytes()
        }
    };
    let client = connect(opts).await?;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut start = 0;
    let mut bytes = 0u64;
    while start < count {
        let end = (start + batch).min(count);
        let ops: Vec<TxnOp> = (start..end)
            .map(|i| {
                let v = value_for(i, size);
                bytes += v.len() as u64;
                TxnOp::put(key(i), v, None)
            })
            .collect();
        if set.len() >= inflight {
            set.join_next().await.expect("task").map_err(err)??;
        }
        let mut kv = client.kv_client().max_decoding_message_size(256 << 20);
        set.spawn(async move {
            kv.txn(Txn::new().and_then(ops))
                .await
                .map(|_| ())
                .map_err(err)
        });
        start = end;
    }
    while let Some(r) = set.join_next().await {
        r.map_err(err)??;
    }
    let el = t0.elapsed().as_secs_f64();
    Out::default()
        .str("cmd", b"load")
        .num("rows", count)
        .num("bytes", bytes)
        .secs("elapsed", el)
        .print();
    Ok(())
}

// ---------------------------------------------------------------------------
// scan
// ---------------------------------------------------------------------------

struct ScanResult {
    rows: u64,
    bytes: u64,
    pages: u64,
    first_key: Vec<u8>,
    last_key: Vec<u8>,
}

/// `--fetch-size N` pages by exactly N keys; without it, the FDW's default
/// adaptive paging (first 1000 keys, then growing up to `PAGE_BYTES`).
fn fetch_policy(a: &Args) -> Res<(u32, bool)> {
    Ok(match a.vals.get("fetch-size") {
        Some(_) => (a.num("fetch-size", None)? as u32, false),
        None => (etcd_fdw_core::options::DEFAULT_FETCH_SIZE, true),
    })
}

/// Page through `spec` exactly like the FDW's scan does.
async fn run_scan(kv: &mut KvClient, spec: ScanSpec, timeout: Duration) -> Res<ScanResult> {
    let mut pager = Pager::new(spec);
    let mut r = ScanResult {
        rows: 0,
        bytes: 0,
        pages: 0,
        first_key: Vec::new(),
        last_key: Vec::new(),
    };
    while let Some(req) = pager.next_request() {
        let opts = req.get_options();
        let resp = client::with_timeout(timeout, kv.get(req.key, Some(opts)))
            .await
            .map_err(err)?;
        let kvs: Vec<KeyValue> = pager.accept(resp);
        for kv in &kvs {
            if r.rows == 0 {
                r.first_key = kv.key().to_vec();
            }
            r.rows += 1;
            r.bytes += kv.value().len() as u64;
        }
        if let Some(l) = kvs.last() {
            r.last_key = l.key().to_vec();
        }
        r.pages += 1;
    }
    Ok(r)
}

/// The whole range in ONE request without a limit (`--single-request`):
/// the fastest any client can read it, and the most memory.
async fn run_single_request(
    kv: &mut KvClient,
    spec: &ScanSpec,
    timeout: Duration,
) -> Res<ScanResult> {
    let range = &spec.keys.ranges()[0];
    let (key, end) = range.to_etcd();
    let mut opts = GetOptions::new().with_range(end);
    if spec.keys_only {
        opts = opts.with_keys_only();
    }
    let resp = client::with_timeout(timeout, kv.get(key, Some(opts)))
        .await
        .map_err(err)?;
    let kvs = resp.kvs();
    Ok(ScanResult {
        rows: kvs.len() as u64,
        bytes: kvs.iter().map(|kv| kv.value().len() as u64).sum(),
        pages: 1,
        first_key: kvs.first().map_or(Vec::new(), |kv| kv.key().to_vec()),
        last_key: kvs.last().map_or(Vec::new(), |kv| kv.key().to_vec()),
    })
}

async fn cmd_scan(a: &Args, opts: &ServerOptions) -> Res<()> {
    let prefix = a.str("prefix")?;
    let (fetch_size, adaptive) = fetch_policy(a)?;
    let repeat = a.num("repeat", Some(1))?.max(1);
    let limit = a
        .vals
        .get("limit")
        .map(|_| a.num("limit", None))
        .transpose()?;
    let spec = ScanSpec {
        keys: KeySet::from_range(KeyRange::prefix(prefix.as_bytes())),
        sort: a.flag("desc").then_some((SortField::Key, true)),
        limit,
        keys_only: a.flag("keys-only"),
        revision: 0,
        serializable: false,
        fetch_size,
        adaptive,
        // a scan without a limit reads its whole range, as the FDW's
        // full scans do (see ScanSpec::whole_range)
        whole_range: limit.is_none(),
    };
    let client = connect(opts).await?;
    let mut kv = client.kv_client().max_decoding_message_size(256 << 20);
    warm_up(&mut kv, prefix.as_bytes()).await?;
    let hwm0 = vmhwm_kb();
    let t0 = Instant::now();
    let mut last = None;
    for _ in 0..repeat {
        last = Some(if a.flag("single-request") {
            run_single_request(&mut kv, &spec, opts.request_timeout).await?
        } else {
            run_scan(&mut kv, spec.clone(), opts.request_timeout).await?
        });
    }
    let el = t0.elapsed().as_secs_f64();
    let r = last.expect("repeat >= 1");
    Out::default()
        .str("cmd", b"scan")
        .num("repeat", repeat)
        .num("rows", r.rows)
        .num("bytes", r.bytes)
        .num("pages", r.pages)
        .str("first_key", &r.first_key)
        .str("last_key", &r.last_key)
        .secs("elapsed", el)
        .secs("per_op", el / repeat as f64)
        .num("vmhwm_before_kb", hwm0)
        .num("vmhwm_after_kb", vmhwm_kb())
        .print();
    Ok(())
}

// ---------------------------------------------------------------------------
// count, keylist
// ---------------------------------------------------------------------------

/// `count(*)` of a prefix the way the FDW pushes it down: one `count_only`
/// range request (the pager's, so the same request).
async fn cmd_count(a: &Args, opts: &ServerOptions) -> Res<()> {
    let prefix = a.str("prefix")?;
    let repeat = a.num("repeat", Some(1))?.max(1);
    let spec = ScanSpec {
        keys: KeySet::from_range(KeyRange::prefix(prefix.as_bytes())),
        sort: None,
        limit: None,
        keys_only: true,
        revision: 0,
        serializable: false,
        fetch_size: etcd_fdw_core::options::DEFAULT_FETCH_SIZE,
        adaptive: true,
        whole_range: false,
    };
    let client = connect(opts).await?;
    let mut kv = client.kv_client();
    warm_up(&mut kv, prefix.as_bytes()).await?;
    let t0 = Instant::now();
    let (mut count, mut requests) = (0, 0);
    for _ in 0..repeat {
        let mut pager = Pager::new(spec.clone()).count_only();
        while let Some(req) = pager.next_request() {
            let opts_ = req.get_options();
            let resp = client::with_timeout(opts.request_timeout, kv.get(req.key, Some(opts_)))
                .await
                .map_err(err)?;
            pager.accept(resp);
        }
        count = pager.counted();
        requests = pager.pages();
    }
    let el = t0.elapsed().as_secs_f64();
    Out::default()
        .str("cmd", b"count")
        .num("repeat", repeat)
        .num("rows", count)
        .num("requests", requests)
        .secs("elapsed", el)
        .secs("per_op", el / repeat as f64)
        .print();
    Ok(())
}

/// The keys of a file (one per line) read the way the FDW reads a key
/// list: read-only transactions of `--batch` gets, in key order, at the
/// first one's revision.
async fn cmd_keylist(a: &Args, opts: &ServerOptions) -> Res<()> {
    let file = a.str("keys-file")?;
    let batch = a.num("batch", Some(128))?.max(1) as u32;
    let repeat = a.num("repeat", Some(1))?.max(1);
    let keys: Vec<Vec<u8>> = std::fs::read_to_string(&file)
        .map_err(|e| format!("{file}: {e}"))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let spec = ScanSpec {
        keys: KeySet::from_keys(keys.iter().map(Vec::as_slice)),
        sort: None,
        limit: None,
        keys_only: false,
        revision: 0,
        serializable: false,
        fetch_size: etcd_fdw_core::options::DEFAULT_FETCH_SIZE,
        adaptive: true,
        whole_range: false,
    };
    let client = connect(opts).await?;
    let mut kv = client.kv_client().max_decoding_message_size(256 << 20);
    warm_up(&mut kv, keys.first().map_or(&b"\0"[..], Vec::as_slice)).await?;
    let t0 = Instant::now();
    let (mut rows, mut bytes, mut requests) = (0u64, 0u64, 0u64);
    for _ in 0..repeat {
        let mut pager = Pager::new(spec.clone()).with_key_batches(batch);
        (rows, bytes) = (0, 0);
        loop {
            let kvs = if let Some(b) = pager.next_batch() {
                let resp = client::with_timeout(opts.request_timeout, kv.txn(b.txn()))
                    .await
                    .map_err(err)?;
                pager.accept_batch(resp)
            } else if let Some(req) = pager.next_request() {
                // a single key: a plain range request
                let opts_ = req.get_options();
                let resp = client::with_timeout(opts.request_timeout, kv.get(req.key, Some(opts_)))
                    .await
                    .map_err(err)?;
                pager.accept(resp)
            } else {
                break;
            };
            rows += kvs.len() as u64;
            bytes += kvs.iter().map(|kv| kv.value().len() as u64).sum::<u64>();
        }
        requests = pager.pages();
    }
    let el = t0.elapsed().as_secs_f64();
    Out::default()
        .str("cmd", b"keylist")
        .num("repeat", repeat)
        .num("keys", keys.len())
        .num("rows", rows)
        .num("bytes", bytes)
        .num("requests", requests)
        .secs("elapsed", el)
        .secs("per_op", el / repeat as f64)
        .print();
    Ok(())
}

// ---------------------------------------------------------------------------
// lookups
// ---------------------------------------------------------------------------

struct LookupStats {
    ops: u64,
    found: u64,
    bytes: u64,
    /// Each operation's latency, in microseconds.
    latencies_us: Vec<u32>,
}

/// `n` operations over `keys` (from `start`, every `step`-th): a get, or
/// with `mixed` a get of one key and then a guarded update of the next
/// (read it, then a Txn comparing its mod_revision and putting a new
/// value: what an UPDATE through the FDW sends in transaction mode).
async fn lookup_loop(
    kv: &mut KvClient,
    keys: &[Vec<u8>],
    start: usize,
    step: usize,
    n: u64,
    mixed: bool,
) -> Res<LookupStats> {
    let mut s = LookupStats {
        ops: 0,
        found: 0,
        bytes: 0,
        latencies_us: Vec::with_capacity(n as usize),
    };
    let mut i = start;
    for _ in 0..n {
        let t = Instant::now();
        let resp = kv
            .get(keys[i % keys.len()].clone(), None)
            .await
            .map_err(err)?;
        if let Some(kv) = resp.kvs().first() {
            s.found += 1;
            s.bytes += kv.value().len() as u64;
        }
        if mixed {
            let key = keys[(i + 1) % keys.len()].clone();
            let cur = kv.get(key.clone(), None).await.map_err(err)?;
            let rev = cur.kvs().first().map_or(0, |kv| kv.mod_revision());
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    rev,
                )])
                .and_then(vec![TxnOp::put(key, format!("v{i}"), None)]);
            kv.txn(txn).await.map_err(err)?;
        }
        s.latencies_us
            .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        s.ops += 1;
        i += step;
    }
    Ok(s)
}

/// The `q`-quantile (0..=1) of sorted `xs`, in seconds.
fn quantile_s(xs: &[u32], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let i = ((xs.len() - 1) as f64 * q).round() as usize;
    f64::from(xs[i]) / 1e6
}

fn cmd_lookups(a: &Args, opts: &ServerOptions) -> Res<()> {
    let mixed = a.flag("mixed");
    let file = a.str("keys-file")?;
    let count = a.num("count", None)?;
    let conc = a.num("concurrency", Some(1))?.max(1) as usize;
    let keys: Vec<Vec<u8>> = std::fs::read_to_string(&file)
        .map_err(|e| format!("{file}: {e}"))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect();
    if keys.is_empty() {
        return Err(format!("{file}: no keys"));
    }
    let keys = std::sync::Arc::new(keys);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(conc + 1));
    let mut handles = Vec::new();
    for t in 0..conc {
        // Each worker's share of `count`.
        let n = count / conc as u64 + u64::from((t as u64) < count % conc as u64);
        let keys = keys.clone();
        let barrier = barrier.clone();
        let opts = opts.clone();
        handles.push(std::thread::spawn(
            move || -> Res<(LookupStats, Instant)> {
                let rt = runtime();
                let setup = rt.block_on(async {
                    let client = connect(&opts).await?;
                    let mut kv = client.kv_client().max_decoding_message_size(256 << 20);
                    warm_up(&mut kv, &keys[t % keys.len()]).await?;
                    Ok::<_, String>((client, kv))
                });
                // Always reach the barrier, even after an error.
                barrier.wait();
                let (_client, mut kv) = setup?;
                let s = rt.block_on(lookup_loop(&mut kv, &keys, t, conc, n, mixed))?;
                Ok((s, Instant::now()))
            },
        ));
    }
    barrier.wait();
    let t0 = Instant::now();
    let mut total = LookupStats {
        ops: 0,
        found: 0,
        bytes: 0,
        latencies_us: Vec::new(),
    };
    let mut end = t0;
    for h in handles {
        let (s, done) = h.join().map_err(|_| "worker panicked".to_string())??;
        total.ops += s.ops;
        total.found += s.found;
        total.bytes += s.bytes;
        total.latencies_us.extend(s.latencies_us);
        end = end.max(done);
    }
    total.latencies_us.sort_unstable();
    let el = (end - t0).as_secs_f64();
    Out::default()
        .str(
            "cmd",
            if mixed {
                b"mixed".as_slice()
            } else {
                b"lookups".as_slice()
            },
        )
        .num("concurrency", conc)
        .num("ops", total.ops)
        .num("found", total.found)
        .num("bytes", total.bytes)
        .secs("elapsed", el)
        .secs("per_op", el / total.ops.max(1) as f64)
        .num("ops_per_sec", format!("{:.1}", total.ops as f64 / el))
        .secs("p50", quantile_s(&total.latencies_us, 0.5))
        .secs("p99", quantile_s(&total.latencies_us, 0.99))
        .num("vmhwm_kb", vmhwm_kb())
        .print();
    Ok(())
}

// ---------------------------------------------------------------------------
// insert / update / delete
// ---------------------------------------------------------------------------

/// Guarded writes buffered into transactions of `batch` operations.
struct TxnBuffer {
    batch: usize,
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    txns: u64,
    rows: u64,
}

impl TxnBuffer {
    fn new(batch: u64) -> Self {
        TxnBuffer {
            batch: batch.max(1) as usize,
            compares: Vec::new(),
            ops: Vec::new(),
            txns: 0,
            rows: 0,
        }
    }

    async fn push(&mut self, kv: &mut KvClient, cmp: Compare, op: TxnOp) -> Res<()> {
        self.compares.push(cmp);
        self.ops.push(op);
        self.rows += 1;
        if self.ops.len() >= self.batch {
            self.flush(kv).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, kv: &mut KvClient) -> Res<()> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let txn = Txn::new()
            .when(std::mem::take(&mut self.compares))
            .and_then(std::mem::take(&mut self.ops));
        self.txns += 1;
        txn_ok(kv, txn).await
    }
}

fn print_write(cmd: &str, buf: &TxnBuffer, bytes: u64, el: f64) {
    Out::default()
        .str("cmd", cmd.as_bytes())
        .num("rows", buf.rows)
        .num("txns", buf.txns)
        .num("bytes", bytes)
        .secs("elapsed", el)
        .secs("per_op", el / buf.rows.max(1) as f64)
        .print();
}

async fn cmd_insert(a: &Args, opts: &ServerOptions) -> Res<()> {
    let prefix = a.str("prefix")?;
    let count = a.num("count", None)?;
    let size = a.num("value-size", Some(100))? as usize;
    let client = connect(opts).await?;
    let mut kv = client.kv_client().max_decoding_message_size(256 << 20);
    warm_up(&mut kv, prefix.as_bytes()).await?;
    let mut buf = TxnBuffer::new(a.num("batch", Some(128))?);
    let value = vec![b'v'; size];
    let mut bytes = 0;
    let t0 = Instant::now();
    for i in 1..=count {
        let key = format!("{prefix}{i}").into_bytes();
        bytes += value.len() as u64;
        buf.push(
            &mut kv,
            Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            TxnOp::put(key, value.clone(), None),
        )
        .await?;
    }
    buf.flush(&mut kv).await?;
    print_write("insert", &buf, bytes, t0.elapsed().as_secs_f64());
    Ok(())
}

/// Read `prefix` in pages of `fetch_size` (one snapshot, like the FDW's
/// scan) and hand every pair to `f`, which buffers guarded writes.
async fn cmd_rewrite(a: &Args, opts: &ServerOptions, update: bool) -> Res<()> {
    let prefix = a.str("prefix")?;
    let (fetch_size, adaptive) = fetch_policy(a)?;
    let suffix = a.str_or("suffix", "x").into_bytes();
    // --prev-kv: also ask etcd for the previous pairs, as etcd_fdw does.
    let prev_kv = a.flag("prev-kv");
    let client = connect(opts).await?;
    let mut kv = client.kv_client().max_decoding_message_size(256 << 20);
    let mut writer = client.kv_client().max_decoding_message_size(256 << 20);
    warm_up(&mut kv, prefix.as_bytes()).await?;
    let mut buf = TxnBuffer::new(a.num("batch", Some(128))?);
    let mut bytes = 0u64;
    let t0 = Instant::now();
    let mut pager = Pager::new(ScanSpec {
        keys: KeySet::from_range(KeyRange::prefix(prefix.as_bytes())),
        sort: None,
        limit: None,
        keys_only: false,
        revision: 0,
        serializable: false,
        fetch_size,
        adaptive,
        whole_range: false,
    });
    while let Some(req) = pager.next_request() {
        let o = req.get_options();
        let resp = client::with_timeout(opts.request_timeout, kv.get(req.key, Some(o)))
            .await
            .map_err(err)?;
        let kvs = pager.accept(resp);
        for item in kvs {
            let key = item.key().to_vec();
            let cmp = Compare::mod_revision(key.clone(), CompareOp::Equal, item.mod_revision());
            let op = if update {
                let mut v = item.value().to_vec();
                v.extend_from_slice(&suffix);
                bytes += v.len() as u64;
                // Keep the key's lease, like an UPDATE that does not set it.
                let mut o = PutOptions::new().with_ignore_lease();
                if prev_kv {
                    o = o.with_prev_key();
                }
                TxnOp::put(key, v, Some(o))
            } else {
                bytes += item.value().len() as u64;
                let o = prev_kv.then(|| DeleteOptions::new().with_prev_key());
                TxnOp::delete(key, o)
            };
            buf.push(&mut writer, cmp, op).await?;
        }
    }
    buf.flush(&mut writer).await?;
    print_write(
        if update { "update" } else { "delete" },
        &buf,
        bytes,
        t0.elapsed().as_secs_f64(),
    );
    Ok(())
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first().cloned() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    if cmd == "-h" || cmd == "--help" {
        println!("{USAGE}");
        return;
    }
    let result = (|| -> Res<()> {
        let a = Args::parse(&argv[1..])?;
        let opts = server_options(&a.str("endpoint")?)?;
        match cmd.as_str() {
            "lookups" => cmd_lookups(&a, &opts),
            "load" => runtime().block_on(cmd_load(&a, &opts)),
            "scan" => runtime().block_on(cmd_scan(&a, &opts)),
            "count" => runtime().block_on(cmd_count(&a, &opts)),
            "keylist" => runtime().block_on(cmd_keylist(&a, &opts)),
            "insert" => runtime().block_on(cmd_insert(&a, &opts)),
            "update" => runtime().block_on(cmd_rewrite(&a, &opts, true)),
            "delete" => runtime().block_on(cmd_rewrite(&a, &opts, false)),
            other => Err(format!("unknown subcommand {other:?}\n{USAGE}")),
        }
    })();
    if let Err(e) = result {
        eprintln!("rawclient {cmd}: {e}");
        std::process::exit(1);
    }
}

//! Option parsing (`options.rs`): no entry point panics on any input
//! (arbitrary Unicode, control characters, NUL, huge numbers, empty
//! strings, odd names), errors name what they refuse, and valid options
//! round-trip as documented.

use std::time::Duration;

use etcd_fdw_core::keyrange::{KeyRange, KeySet};
use etcd_fdw_core::options::{
    effective_batch_size, effective_fetch_size, parse_connstr, parse_server, parse_table, validate,
    Consistency, EtcdEndpoint, OptionContext, OptionError, DEFAULT_BATCH_SIZE,
    DEFAULT_CONNECT_TIMEOUT_SECS, DEFAULT_FETCH_SIZE, DEFAULT_REQUEST_TIMEOUT_SECS,
};
use etcd_fdw_core::tonic::transport::Endpoint;
use proptest::prelude::*;

use crate::cases;

const CONTEXTS: [OptionContext; 5] = [
    OptionContext::Wrapper,
    OptionContext::Server,
    OptionContext::UserMapping,
    OptionContext::Table,
    OptionContext::Column,
];

/// Every option name some context accepts.
fn known_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = CONTEXTS
        .iter()
        .flat_map(|c| c.valid_options().iter().copied())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Values meant to break parsers: control characters, NUL, huge and odd
/// numbers, URLs gone wrong, and arbitrary Unicode.
fn nasty_value() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "",
        " ",
        "\t",
        "\n",
        "\r",
        "\0",
        "\u{1b}",
        "\u{7f}",
        "\u{a0}",
        "\u{2003}",
        "\u{feff}",
        "\u{10ffff}",
        "é",
        "ß",
        "İ",
        "K",
        "0",
        "1",
        "-",
        "+",
        ".",
        "e",
        "E",
        "9",
        "inf",
        "NaN",
        "infinity",
        "0x1f",
        "1e309",
        "1e-400",
        "-0",
        "18446744073709551616",
        "99999999999999999999999999999999999999",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        ":",
        "::",
        "/",
        "//",
        "://",
        "http://",
        "https://",
        "ftp://",
        "[",
        "]",
        "[::1]",
        "@",
        ",",
        "localhost",
        "h",
        "2379",
        "65535",
        "65536",
        "true",
        "TRUE",
        "yes",
        "off",
        "l",
        "s",
        "linearizable",
    ]);
    prop_oneof![
        3 => prop::collection::vec(pieces, 0..6).prop_map(|v| v.concat()),
        2 => any::<String>(),
        1 => "[\\x00-\\x1f0-9:/,.\\[\\] +-]{0,12}",
    ]
}

/// Option names: known ones (any context), near misses and garbage.
fn name() -> impl Strategy<Value = String> {
    let known = prop::sample::select(known_names()).prop_map(str::to_string);
    prop_oneof![
        6 => known.clone(),
        1 => known.clone().prop_map(|n| n.to_uppercase()),
        1 => known.prop_map(|n| format!(" {n}")),
        1 => Just(String::new()),
        1 => any::<String>(),
    ]
}

fn option_list() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((name(), nasty_value()), 0..8)
}

/// What the name check of `ctx` decides: the first entry that is unknown
/// or a repeat.
fn first_bad_name(ctx: OptionContext, opts: &[(String, String)]) -> Option<OptionError> {
    for (i, (n, _)) in opts.iter().enumerate() {
        if !ctx.valid_options().contains(&n.as_str()) {
            return Some(OptionError::Unknown {
                name: n.clone(),
                context: ctx,
            });
        }
        if opts[..i].iter().any(|(m, _)| m == n) {
            return Some(OptionError::Duplicate(n.clone()));
        }
    }
    None
}

fn o(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.clone()))
        .collect()
}

/// Whitespace to put around a value (values are trimmed).
#[derive(Clone, Debug)]
struct Pad(&'static str, &'static str);

impl Pad {
    fn around(&self, v: impl std::fmt::Display) -> String {
        format!("{}{v}{}", self.0, self.1)
    }
}

fn pad() -> impl Strategy<Value = Pad> {
    let ws = || prop::sample::select(vec!["", " ", "  ", "\t", "\n", "\u{a0}"]);
    (ws(), ws()).prop_map(|(a, b)| Pad(a, b))
}

/// A host as `connstr` accepts it: a name, an IPv4 address or a bracketed
/// IPv6 address.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9.-]{0,12}",
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        prop::sample::select(vec!["[::1]", "[fe80::1]", "[2001:db8::2:1]"]).prop_map(String::from),
    ]
}

fn endpoint() -> impl Strategy<Value = EtcdEndpoint> {
    (host(), 1..=u16::MAX, prop::option::of(any::<bool>())).prop_map(|(h, port, tls)| {
        EtcdEndpoint {
            authority: format!("{h}:{port}"),
            tls,
        }
    })
}

/// The seconds a timeout option gives, written in several ways.
fn seconds_text() -> impl Strategy<Value = (f64, String)> {
    prop_oneof![
        (1u64..=365 * 86_400).prop_map(|s| (s as f64, s.to_string())),
        (1e-9f64..=365.0 * 86_400.0).prop_map(|v| (v, format!("{v}"))),
        (1u32..=9999, -12i32..=3).prop_map(|(m, e)| {
            let text = format!("{m}e{e}");
            (text.parse().unwrap(), text)
        }),
    ]
}

/// `r` is the result of parsing option `name` = `v` alone: Ok exactly when
/// `ok`, else an InvalidValue naming it and quoting `v`.
fn check_value(
    name: &str,
    v: &str,
    ok: bool,
    r: Result<(), OptionError>,
) -> Result<(), TestCaseError> {
    match r {
        Ok(()) => prop_assert!(ok, "{} = {:?} accepted", name, v),
        Err(OptionError::InvalidValue { name: n, value, .. }) => {
            prop_assert!(!ok, "{} = {:?} refused", name, v);
            prop_assert_eq!(n, name);
            prop_assert_eq!(value, v);
        }
        Err(e) => prop_assert!(false, "{} = {:?}: {:?}", name, v, e),
    }
    Ok(())
}

/// Strings that look like `connstr`s: endpoints, good and broken, with or
/// without schemes, spaces and slashes, separated by commas.
fn connstr_like() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec![
        "", "", "http://", "https://", "ftp://", "http:/", "HTTP://",
    ]);
    let host = prop::sample::select(vec![
        "h",
        "localhost",
        "10.0.0.1",
        "[::1]",
        "",
        "a b",
        " h",
        "::1",
        "[::1",
        "h/x",
        "u@h",
        "h:1",
    ]);
    let port = prop::sample::select(vec![
        "1", "2379", "65535", "0", "65536", "+1", "x", "", "01",
    ]);
    let tail = prop::sample::select(vec!["", "", "/", "//", " ", "/x"]);
    let endpoint = (scheme, host, prop::bool::weighted(0.9), port, tail)
        .prop_map(|(s, h, colon, p, t)| format!("{s}{h}{}{p}{t}", if colon { ":" } else { "" }));
    prop::collection::vec(endpoint, 1..4).prop_map(|v| v.join(","))
}

proptest! {
    #![proptest_config(cases(256))]

    /// No entry point panics, whatever the names and values; errors
    /// render (message and hint); validate agrees with the parsers.
    #[test]
    fn parsing_never_panics(server in option_list(), mapping in option_list(), v in nasty_value()) {
        let _ = parse_connstr(&v).map(|eps| {
            for e in eps {
                let _ = (e.url(true), e.url(false), e.to_string());
            }
        });
        let srv = parse_server(&server, &mapping);
        let tbl = parse_table(&server);
        for e in [srv.as_ref().err(), tbl.as_ref().err()].into_iter().flatten() {
            let _ = (e.to_string(), e.hint());
        }
        for ctx in CONTEXTS {
            let _ = (ctx.object_name(), ctx.valid_options());
            let r = validate(ctx, &server);
            if let Err(e) = &r {
                let _ = (e.to_string(), e.hint());
            }
            match (ctx, first_bad_name(ctx, &server)) {
                (_, Some(bad)) => prop_assert_eq!(r.as_ref().err(), Some(&bad)),
                (OptionContext::Server | OptionContext::Table, None) => {}
                // a user mapping's only checked value: password_required
                (OptionContext::UserMapping, None) => {
                    let bool_ok = server
                        .iter()
                        .rev()
                        .find(|(n, _)| n == "password_required")
                        .is_none_or(|(_, v)| {
                            matches!(
                                v.trim().to_ascii_lowercase().as_str(),
                                "true" | "on" | "yes" | "1" | "t" | "y" | "false" | "off" | "no" | "0" | "f" | "n"
                            )
                        });
                    prop_assert_eq!(r.is_ok(), bool_ok, "{:?}", r)
                }
                (_, None) => prop_assert!(r.is_ok(), "{:?}", r),
            }
        }
        prop_assert_eq!(validate(OptionContext::Server, &server).is_ok(), parse_server(&server, &[]).is_ok());
        prop_assert_eq!(validate(OptionContext::Table, &server).is_ok(), tbl.is_ok());
        if let (Ok(s), Ok(t)) = (&srv, &tbl) {
            let _ = (s.tls_configured(), s.endpoints_display(), t.key_set(), t.read_only_reason());
            let (fetch, adaptive) = effective_fetch_size(s, t);
            prop_assert!(fetch >= 1);
            prop_assert_eq!(adaptive, t.fetch_size.is_none() && s.fetch_size.is_none());
            prop_assert!(effective_batch_size(s, t) >= 1);
        }
    }

    /// Each option alone with a random value: accepted exactly when the
    /// trimmed value is of the documented kind and range, and otherwise
    /// refused naming that option and quoting the value.
    #[test]
    fn values_are_checked(
        v in nasty_value(),
        int in prop_oneof![
            -2i64..=2, 9_999i64..=10_002, 999_999i64..=1_000_002,
            Just(i64::MAX), Just(i64::MIN), any::<i64>(),
        ],
        pad in pad(),
    ) {
        for v in [v.clone(), pad.around(int)] {
            let t = v.trim();
            let int_in = |lo: i64, hi: i64| t.parse::<i64>().is_ok_and(|n| (lo..=hi).contains(&n));
            let secs = t.parse::<f64>().is_ok_and(|x| x.is_finite() && x > 0.0 && x <= 86_400.0 * 365.0 && !std::time::Duration::from_secs_f64(x).is_zero());
            let lower = t.to_ascii_lowercase();
            let words = |ws: &[&str]| ws.contains(&lower.as_str());
            let server = [
                ("connect_timeout", secs),
                ("request_timeout", secs),
                ("fetch_size", int_in(1, 1_000_000)),
                ("batch_size", int_in(1, 10_000)),
            ];
            for (n, ok) in server {
                let r = parse_server(&o(&[("connstr", "h:1".into()), (n, v.clone())]), &[]);
                check_value(n, &v, ok, r.map(|_| ()))?;
            }
            let table = [
                ("fetch_size", int_in(1, 1_000_000)),
                ("batch_size", int_in(1, 10_000)),
                ("revision", int_in(0, i64::MAX)),
                ("keys_only", words(&["true", "on", "yes", "1", "t", "y", "false", "off", "no", "0", "f", "n"])),
                ("consistency", words(&["l", "s", "linearizable", "serializable"])),
            ];
            for (n, ok) in table {
                let r = parse_table(&o(&[("rowid_column", "k".into()), (n, v.clone())]));
                check_value(n, &v, ok, r.map(|_| ()))?;
            }
            let r = parse_table(&o(&[("rowid_column", v.clone())]));
            check_value("rowid_column", &v, !v.is_empty(), r.map(|_| ()))?;
            let r = parse_server(&o(&[("connstr", v.clone())]), &[]);
            check_value("connstr", &v, parse_connstr(&v).is_ok(), r.map(|_| ()))?;
        }
    }

    /// Integers in range round-trip (trimmed; in server and table alike);
    /// others are refused naming the option.
    #[test]
    fn integers_round_trip(
        fetch in prop_oneof![Just(1u32), Just(1_000_000), 1u32..=1_000_000],
        batch in prop_oneof![Just(1u32), Just(10_000), 1u32..=10_000],
        rev in prop_oneof![Just(0i64), Just(i64::MAX), 0i64..=i64::MAX],
        bad_fetch in prop_oneof![Just(0i128), Just(-1), Just(1_000_001), 1_000_001i128..=i128::from(u64::MAX) * 4, i128::MIN..0],
        bad_batch in prop_oneof![Just(0i128), Just(-1), Just(10_001), 10_001i128..=i128::MAX, i128::MIN..0],
        bad_rev in prop_oneof![Just(-1i128), Just(i128::from(i64::MAX) + 1), i128::MIN..0, i128::from(i64::MAX) + 1..=i128::MAX],
        pads in (pad(), pad(), pad()),
    ) {
        let fetch_text = pads.0.around(fetch);
        let batch_text = pads.1.around(batch);
        let rev_text = pads.2.around(rev);
        let s = parse_server(&o(&[("connstr", "h:1".into()), ("fetch_size", fetch_text.clone()), ("batch_size", batch_text.clone())]), &[]).unwrap();
        prop_assert_eq!((s.fetch_size, s.batch_size), (Some(fetch), Some(batch)));
        let t = parse_table(&o(&[
            ("rowid_column", "key".into()),
            ("fetch_size", fetch_text),
            ("batch_size", batch_text),
            ("revision", rev_text),
        ])).unwrap();
        prop_assert_eq!((t.fetch_size, t.batch_size, t.revision), (Some(fetch), Some(batch), rev));
        prop_assert_eq!(t.read_only_reason(), (rev != 0).then_some("revision"));
        let none = parse_server(&o(&[("connstr", "h:1".into())]), &[]).unwrap();
        prop_assert_eq!(effective_fetch_size(&none, &t), (fetch, false));
        prop_assert_eq!(effective_batch_size(&none, &t), batch);
        let plain = parse_table(&o(&[("rowid_column", "key".into())])).unwrap();
        prop_assert_eq!(effective_fetch_size(&s, &plain), (fetch, false));
        prop_assert_eq!(effective_fetch_size(&none, &plain), (DEFAULT_FETCH_SIZE, true));
        prop_assert_eq!(effective_batch_size(&none, &plain), DEFAULT_BATCH_SIZE);
        for (n, v) in [("fetch_size", bad_fetch.to_string()), ("batch_size", bad_batch.to_string()), ("revision", bad_rev.to_string())] {
            let e = parse_table(&o(&[("rowid_column", "key".into()), (n, v.clone())])).unwrap_err();
            prop_assert!(matches!(&e, OptionError::InvalidValue { name, value, .. } if *name == n && *value == v), "{:?}", e);
        }
    }

    /// Timeouts: positive numbers of seconds (up to a year) round-trip,
    /// in any notation Rust's f64 parser reads; the result is positive
    /// (below a nanosecond, the value is refused).
    #[test]
    fn timeouts_round_trip((secs, text) in seconds_text(), pad in pad()) {
        let text = pad.around(text);
        let s = parse_server(&o(&[("connstr", "h:1".into()), ("connect_timeout", text.clone()), ("request_timeout", text.clone())]), &[]);
        if Duration::from_secs_f64(secs).is_zero() {
            prop_assert!(
                matches!(&s, Err(OptionError::InvalidValue { name: "connect_timeout", .. })),
                "{:?}: {:?}", text, s
            );
            return Ok(());
        }
        let s = s.unwrap();
        prop_assert_eq!(s.connect_timeout, Duration::from_secs_f64(secs));
        prop_assert_eq!(s.request_timeout, Duration::from_secs_f64(secs));
        prop_assert!(s.connect_timeout > Duration::ZERO);
        let none = parse_server(&o(&[("connstr", "h:1".into())]), &[]).unwrap();
        prop_assert_eq!(none.connect_timeout, Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS));
        prop_assert_eq!(none.request_timeout, Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS));
    }

    /// Booleans and consistencies: every documented spelling in any ASCII
    /// case with whitespace around; anything else is refused.
    #[test]
    fn words_round_trip(
        b in prop::sample::select(vec!["true", "on", "yes", "1", "t", "y", "false", "off", "no", "0", "f", "n"]),
        c in prop::sample::select(vec!["l", "linearizable", "s", "serializable"]),
        upper in prop::collection::vec(any::<bool>(), 12),
        pad in pad(),
        other in nasty_value(),
    ) {
        let case = |w: &str| -> String {
            w.chars().zip(upper.iter().cycle()).map(|(ch, u)| if *u { ch.to_ascii_uppercase() } else { ch }).collect()
        };
        let t = parse_table(&o(&[
            ("rowid_column", "k".into()),
            ("keys_only", pad.around(case(b))),
            ("consistency", pad.around(case(c))),
        ])).unwrap();
        prop_assert_eq!(t.keys_only, ["true", "on", "yes", "1", "t", "y"].contains(&b));
        prop_assert_eq!(t.consistency, if c.starts_with('l') { Consistency::Linearizable } else { Consistency::Serializable });
        prop_assert_eq!(t.consistency.name().starts_with(c), true);
        if t.keys_only {
            prop_assert_eq!(t.read_only_reason(), Some("keys_only"));
        }
        let word = other.trim().to_ascii_lowercase();
        let bool_ok = ["true", "on", "yes", "1", "t", "y", "false", "off", "no", "0", "f", "n"].contains(&word.as_str());
        let r = parse_table(&o(&[("rowid_column", "k".into()), ("keys_only", other.clone())]));
        prop_assert_eq!(r.is_ok(), bool_ok, "keys_only {:?}", other);
        let cons_ok = ["l", "s", "linearizable", "serializable"].contains(&word.as_str());
        let r = parse_table(&o(&[("rowid_column", "k".into()), ("consistency", other.clone())]));
        prop_assert_eq!(r.is_ok(), cons_ok, "consistency {:?}", other);
    }

    /// A list of endpoints written out (with spaces, trailing slashes,
    /// schemes or not) parses back to the same endpoints, and so does what
    /// `endpoints_display` shows; `url` keeps an explicit scheme.
    #[test]
    fn connstr_round_trips(
        eps in prop::collection::vec(endpoint(), 1..5),
        spaces in prop::collection::vec(prop::sample::select(vec!["", " ", "\t"]), 10),
        slash in prop::collection::vec(any::<bool>(), 5),
        ssl in any::<bool>(),
    ) {
        let parts: Vec<String> = eps
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{}{e}{}{}", spaces[2 * i], if slash[i] { "/" } else { "" }, spaces[2 * i + 1]))
            .collect();
        let text = parts.join(",");
        prop_assert_eq!(parse_connstr(&text), Ok(eps.clone()), "{:?}", text);
        for e in &eps {
            let url = e.url(ssl);
            let tls = e.tls.unwrap_or(ssl);
            prop_assert_eq!(url, format!("{}://{}", if tls { "https" } else { "http" }, e.authority));
        }
        let mut server = o(&[("connstr", text)]);
        if ssl {
            server.push(("ssl_ca".into(), "/ca.pem".into()));
        }
        match parse_server(&server, &[]) {
            Ok(s) => {
                prop_assert_eq!(&s.endpoints, &eps);
                prop_assert_eq!(parse_connstr(&s.endpoints_display()), Ok(eps.clone()));
            }
            Err(e) => {
                // TLS options with an explicit http:// endpoint.
                prop_assert!(ssl && eps.iter().any(|e| e.tls == Some(false)), "{:?}", e);
                prop_assert_eq!(e, OptionError::Conflict("ssl_ca", "connstr"));
            }
        }
    }

    /// Whatever `parse_connstr` accepts shows (Display) as a list that
    /// parses back to the same endpoints, each with a host and a port, and
    /// makes URLs tonic's `Endpoint` (what connecting uses) accepts.
    #[test]
    fn accepted_connstrs_are_stable(v in prop_oneof![nasty_value(), connstr_like()]) {
        if let Ok(eps) = parse_connstr(&v) {
            prop_assert!(!eps.is_empty());
            let shown: Vec<String> = eps.iter().map(|e| e.to_string()).collect();
            prop_assert_eq!(parse_connstr(&shown.join(",")), Ok(eps.clone()), "{:?}", v);
            for e in &eps {
                // host:port, a non-zero port, IPv6 hosts in brackets, no
                // path or user.
                let (host, port) = e.authority.rsplit_once(':').unwrap();
                prop_assert!(!host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0), "{:?}", e);
                prop_assert!(!host.contains(':') || (host.starts_with('[') && host.ends_with(']')), "{:?}", e);
                prop_assert!(!host.contains('/') && !host.contains('@'), "{:?}", e);
                // What connecting does with it (client.rs) works too.
                for tls in [false, true] {
                    let url = e.url(tls);
                    prop_assert!(Endpoint::from_shared(url.clone()).is_ok(), "{:?} accepted, but {:?} is no URI", v, url);
                }
            }
        }
    }

    /// A user mapping's username (with its password) wins over the
    /// server's; a password alone is refused.
    #[test]
    fn credentials_take_the_mappings_first(
        su in prop::option::of("[a-z]{1,3}"), sp in prop::option::of("[a-z]{1,3}"),
        mu in prop::option::of("[a-z]{1,3}"), mp in prop::option::of("[a-z]{1,3}"),
    ) {
        let mut server = o(&[("connstr", "h:1".into())]);
        let mut mapping = Vec::new();
        for (n, v) in [("username", &su), ("password", &sp)] {
            if let Some(v) = v { server.push((n.into(), v.clone())); }
        }
        for (n, v) in [("username", &mu), ("password", &mp)] {
            if let Some(v) = v { mapping.push((n.into(), v.clone())); }
        }
        let (user, pass) = if mu.is_some() { (mu.clone(), mp.clone()) } else { (su.clone(), mp.clone().or(sp.clone())) };
        match parse_server(&server, &mapping) {
            Ok(s) => {
                prop_assert_eq!((s.username, s.password), (user, pass));
            }
            Err(e) => {
                prop_assert!(pass.is_some() && user.is_none());
                prop_assert_eq!(e, OptionError::Requires("password", "username"));
            }
        }
    }

    /// The table's key set is what `TableOptions::key_set` documents, and
    /// the combinations it refuses are refused.
    #[test]
    fn table_key_sets(
        prefix in prop::option::of("[ab/]{0,3}"),
        key in prop::option::of("[ab/]{0,3}"),
        range_end in prop::option::of("[ab/]{0,3}"),
    ) {
        let mut opts = o(&[("rowid_column", "key".into())]);
        for (n, v) in [("prefix", &prefix), ("key", &key), ("range_end", &range_end)] {
            if let Some(v) = v { opts.push((n.into(), v.clone())); }
        }
        let b = |s: &String| s.as_bytes().to_vec();
        let expected = match (&prefix, &key, &range_end) {
            (Some(_), Some(_), _) => Err(Ok(OptionError::Conflict("prefix", "key"))),
            (Some(_), None, Some(_)) => Err(Ok(OptionError::Conflict("prefix", "range_end"))),
            (None, Some(k), _) if k.is_empty() => Err(Err("key")),
            // an empty range_end would be a range no key is in
            (None, _, Some(e)) if e.is_empty() => Err(Err("range_end")),
            (None, Some(k), Some(e)) if e <= k => Err(Err("range_end")),
            (Some(p), None, None) => Ok(KeyRange::prefix(&b(p))),
            (None, Some(k), None) => Ok(KeyRange::single(&b(k))),
            (None, Some(k), Some(e)) => Ok(KeyRange::between(&b(k), Some(&b(e)))),
            (None, None, Some(e)) => Ok(KeyRange::between(b"", Some(&b(e)))),
            (None, None, None) => Ok(KeyRange::all()),
        };
        let got = parse_table(&opts);
        match (expected, got) {
            (Ok(r), Ok(t)) => prop_assert_eq!(t.key_set(), KeySet::from_range(r)),
            (Err(Ok(e)), Err(g)) => prop_assert_eq!(g, e),
            (Err(Err(name)), Err(OptionError::InvalidValue { name: n, .. })) => prop_assert_eq!(n, name),
            (e, g) => prop_assert!(false, "expected {:?}, got {:?}", e, g),
        }
    }
}

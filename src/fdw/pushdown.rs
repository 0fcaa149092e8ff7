//! Which WHERE clauses become etcd key ranges.
//!
//! A clause is pushed only when the key range it becomes selects exactly
//! the rows PostgreSQL would select (then it is dropped from the local
//! quals), or a superset of them (then it is also rechecked locally).
//! etcd compares raw bytes, so:
//! * equality, `IN`, `LIKE 'lit%'` and `starts_with`/`^@` need a
//!   deterministic collation (byte-equal means equal);
//! * `<`, `<=`, `>`, `>=` need a collation that sorts like bytes (C/POSIX)
//!   in a UTF-8 (or SQL_ASCII) database, where byte order is code point
//!   order.  Under any other collation they stay local.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;

use etcd_fdw_core::keyrange::{like_is_equality, like_prefix, KeySet};
use etcd_fdw_core::plan::CondOp;
use pgrx::pg_sys;
use pgrx::{is_a, PgList};

use crate::columns::{self, Repr};

/// The key column as the planner sees it.
#[derive(Clone, Copy, Debug)]
pub struct KeyColumn {
    pub varno: u32,
    pub attno: i16,
    pub repr: Repr,
}

/// A clause (or part of one) that restricts the key.
pub enum Pushed {
    /// Known at plan time.
    Const {
        keys: KeySet,
        exact: bool,
        desc: String,
    },
    /// `key <op> expr`, with `expr` evaluated at execution time.
    Param {
        op: CondOp,
        expr: *mut pg_sys::Expr,
        exact: bool,
        desc: String,
    },
}

impl Pushed {
    pub fn exact(&self) -> bool {
        match self {
            Pushed::Const { exact, .. } | Pushed::Param { exact, .. } => *exact,
        }
    }
}

thread_local! {
    static C_LIKE: RefCell<HashMap<u32, bool>> = RefCell::new(HashMap::new());
}

/// Whether collation `collid` orders text like raw bytes.
pub fn collation_is_c(collid: pg_sys::Oid) -> bool {
    if collid == pg_sys::C_COLLATION_OID || collid == pg_sys::Oid::from(951u32) {
        return true;
    }
    if collid == pg_sys::InvalidOid {
        return false;
    }
    C_LIKE.with(|m| {
        if let Some(v) = m.borrow().get(&u32::from(collid)) {
            return *v;
        }
        // SAFETY: catalog lookups; returned strings are palloc'd or static.
        let v = unsafe { lookup_collation_is_c(collid) };
        m.borrow_mut().insert(u32::from(collid), v);
        v
    })
}

/// `GETSTRUCT()`: the fixed-size part of a catalog tuple.
unsafe fn get_struct<T>(tup: pg_sys::HeapTuple) -> *const T {
    ((*tup).t_data as *const u8).add((*(*tup).t_data).t_hoff as usize) as *const T
}

unsafe fn lookup_collation_is_c(collid: pg_sys::Oid) -> bool {
    // The database's collation is pg_database.datcollate, not the
    // lc_collate setting: PostgreSQL 16 removed that GUC (reading it gave
    // NULL there, so nothing was pushed in a C database).
    let (cache, key, attnum) = if collid == pg_sys::DEFAULT_COLLATION_OID {
        (
            pg_sys::SysCacheIdentifier::DATABASEOID,
            pg_sys::MyDatabaseId,
            pg_sys::Anum_pg_database_datcollate,
        )
    } else {
        (
            pg_sys::SysCacheIdentifier::COLLOID,
            collid,
            pg_sys::Anum_pg_collation_collcollate,
        )
    };
    let tup = pg_sys::SearchSysCache1(cache as _, pg_sys::Datum::from(key));
    if tup.is_null() {
        return false;
    }
    // Only the libc provider with LC_COLLATE C or POSIX compares bytes.
    let provider = if collid == pg_sys::DEFAULT_COLLATION_OID {
        (*get_struct::<pg_sys::FormData_pg_database>(tup)).datlocprovider
    } else {
        (*get_struct::<pg_sys::FormData_pg_collation>(tup)).collprovider
    };
    let mut isnull = false;
    let d = pg_sys::SysCacheGetAttr(cache as _, tup, attnum as _, &mut isnull);
    let c = provider as u8 == b'c'
        && !isnull
        && matches!(
            CStr::from_ptr(pg_sys::text_to_cstring(d.cast_mut_ptr())).to_bytes(),
            b"C" | b"POSIX"
        );
    pg_sys::ReleaseSysCache(tup);
    c
}

fn deterministic(collid: pg_sys::Oid) -> bool {
    // SAFETY: plain catalog lookup.
    collid == pg_sys::InvalidOid || unsafe { pg_sys::get_collation_isdeterministic(collid) }
}

/// Whether a text column with collation `collid` may have its order (and
/// range comparisons) decided by etcd.
pub fn orders_like_bytes(repr: Repr, collid: pg_sys::Oid) -> bool {
    match repr {
        Repr::Text => collation_is_c(collid) && crate::encoding::db_text_is_utf8_bytes(),
        Repr::Bytea | Repr::Int8 => true,
        Repr::Io => false,
    }
}

unsafe fn strip(mut e: *mut pg_sys::Node) -> *mut pg_sys::Node {
    while !e.is_null() && is_a(e, pg_sys::NodeTag::T_RelabelType) {
        e = (*(e as *mut pg_sys::RelabelType)).arg as *mut pg_sys::Node;
    }
    e
}

/// The Var under any binary-compatible casts, if `e` is one.
pub(super) unsafe fn as_var(e: *mut pg_sys::Node) -> Option<*mut pg_sys::Var> {
    let e = strip(e);
    (!e.is_null() && is_a(e, pg_sys::NodeTag::T_Var)).then_some(e as *mut pg_sys::Var)
}

unsafe fn is_key_var(e: *mut pg_sys::Node, kc: &KeyColumn) -> bool {
    let Some(v) = as_var(e) else {
        return false;
    };
    (*v).varno as u32 == kc.varno && (*v).varattno == kc.attno && (*v).varlevelsup == 0
}

/// A value side we can evaluate when the scan starts: a parameter, a
/// column of another relation (a join parameter), or any non-volatile
/// expression of those that does not read this relation.
unsafe fn is_runtime_value(
    root: *mut pg_sys::PlannerInfo,
    e: *mut pg_sys::Node,
    kc: &KeyColumn,
) -> bool {
    let e = strip(e);
    if e.is_null() {
        return false;
    }
    if is_a(e, pg_sys::NodeTag::T_Param) {
        return true;
    }
    if is_a(e, pg_sys::NodeTag::T_Var) {
        let v = e as *mut pg_sys::Var;
        return (*v).varno as u32 != kc.varno && (*v).varlevelsup == 0;
    }
    !pg_sys::contain_volatile_functions(e)
        && !pg_sys::contain_subplans(e)
        && !pg_sys::contain_agg_clause(e)
        && !pg_sys::contain_window_function(e)
        && !pg_sys::bms_is_member(kc.varno as i32, pg_sys::pull_varnos(root, e))
}

/// The bytes of a non-null text/bytea constant.
unsafe fn const_bytes(c: *mut pg_sys::Const, repr: Repr) -> Option<Vec<u8>> {
    if (*c).constisnull {
        return None;
    }
    Some(columns::varlena_bytes((*c).constvalue, repr).into_owned())
}

/// A literal for EXPLAIN.
fn show(bytes: &[u8]) -> String {
    etcd_fdw_core::plan::quote_key(bytes)
}

/// Describe a run-time value expression for EXPLAIN.
unsafe fn describe_value(root: *mut pg_sys::PlannerInfo, e: *mut pg_sys::Node) -> String {
    let e = strip(e);
    if is_a(e, pg_sys::NodeTag::T_Param) {
        let p = e as *mut pg_sys::Param;
        return if (*p).paramkind == pg_sys::ParamKind::PARAM_EXTERN {
            format!("${}", (*p).paramid)
        } else {
            "(join parameter)".to_string()
        };
    }
    if is_a(e, pg_sys::NodeTag::T_Var) {
        let v = e as *mut pg_sys::Var;
        let rte = *(*root).simple_rte_array.add((*v).varno as usize);
        let alias = if !(*rte).eref.is_null() {
            crate::encoding::server_cstr((*(*rte).eref).aliasname)
        } else {
            String::from("?")
        };
        let col = if (*rte).relid != pg_sys::InvalidOid {
            let p = pg_sys::get_attname((*rte).relid, (*v).varattno, true);
            if p.is_null() {
                format!("#{}", (*v).varattno)
            } else {
                crate::encoding::server_cstr(p)
            }
        } else {
            format!("#{}", (*v).varattno)
        };
        return format!("{alias}.{col}");
    }
    "(expression)".to_string()
}

/// Analyse one clause.  `None`: not pushable (keep it local).
///
/// # Safety
/// `clause` must be a valid expression tree of the query being planned.
pub unsafe fn classify(
    root: *mut pg_sys::PlannerInfo,
    clause: *mut pg_sys::Node,
    kc: &KeyColumn,
) -> Option<Pushed> {
    if clause.is_null() {
        return None;
    }
    if is_a(clause, pg_sys::NodeTag::T_OpExpr) {
        let op = clause as *mut pg_sys::OpExpr;
        let args = PgList::<pg_sys::Node>::from_pg((*op).args);
        if args.len() != 2 {
            return None;
        }
        let (l, r) = (args.get_ptr(0)?, args.get_ptr(1)?);
        let (value, key_on_left) = if is_key_var(l, kc) {
            (r, true)
        } else if is_key_var(r, kc) {
            (l, false)
        } else {
            return None;
        };
        return classify_op(
            (*op).opfuncid,
            (*op).inputcollid,
            value,
            key_on_left,
            root,
            kc,
        );
    }
    if is_a(clause, pg_sys::NodeTag::T_FuncExpr) {
        let f = clause as *mut pg_sys::FuncExpr;
        let args = PgList::<pg_sys::Node>::from_pg((*f).args);
        if (*f).funcid == pg_sys::Oid::from(pg_sys::F_STARTS_WITH)
            && args.len() == 2
            && is_key_var(args.get_ptr(0)?, kc)
        {
            return classify_op(
                (*f).funcid,
                (*f).inputcollid,
                args.get_ptr(1)?,
                true,
                root,
                kc,
            );
        }
        return None;
    }
    if is_a(clause, pg_sys::NodeTag::T_ScalarArrayOpExpr) {
        let sa = clause as *mut pg_sys::ScalarArrayOpExpr;
        let args = PgList::<pg_sys::Node>::from_pg((*sa).args);
        let func = u32::from((*sa).opfuncid);
        if !(*sa).useOr
            || !(func == pg_sys::F_TEXTEQ || func == pg_sys::F_BYTEAEQ)
            || args.len() != 2
            || !is_key_var(args.get_ptr(0)?, kc)
            || !deterministic((*sa).inputcollid)
        {
            return None;
        }
        let arr = strip(args.get_ptr(1)?);
        if is_a(arr, pg_sys::NodeTag::T_Const) {
            let c = arr as *mut pg_sys::Const;
            if (*c).constisnull {
                return Some(Pushed::Const {
                    keys: KeySet::empty(),
                    exact: true,
                    desc: "key = ANY(NULL)".into(),
                });
            }
            let values = array_bytes((*c).constvalue, kc.repr);
            let n = values.iter().flatten().count();
            return Some(Pushed::Const {
                keys: CondOp::In.key_set(&values),
                exact: true,
                desc: format!("key IN ({n} keys)"),
            });
        }
        if is_runtime_value(root, arr, kc) {
            let desc = format!("key = ANY({})", describe_value(root, arr));
            return Some(Pushed::Param {
                op: CondOp::In,
                expr: arr as *mut pg_sys::Expr,
                exact: true,
                desc,
            });
        }
        return None;
    }
    if is_a(clause, pg_sys::NodeTag::T_BoolExpr) {
        let b = clause as *mut pg_sys::BoolExpr;
        let args = PgList::<pg_sys::Node>::from_pg((*b).args);
        let is_or = (*b).boolop == pg_sys::BoolExprType::OR_EXPR;
        let is_and = (*b).boolop == pg_sys::BoolExprType::AND_EXPR;
        if !is_or && !is_and {
            return None;
        }
        let mut acc: Option<KeySet> = None;
        let mut exact = true;
        let mut descs = Vec::new();
        for arg in args.iter_ptr() {
            match classify(root, arg, kc) {
                Some(Pushed::Const {
                    keys,
                    exact: e,
                    desc,
                }) => {
                    exact &= e;
                    descs.push(desc);
                    acc = Some(match acc {
                        None => keys,
                        Some(a) if is_or => a.union(&keys),
                        Some(a) => a.intersect(&keys),
                    });
                }
                // An AND arm we cannot push only loosens the range (the
                // whole clause is rechecked); an OR arm we cannot push
                // makes the whole OR unpushable.
                _ if is_and => exact = false,
                _ => return None,
            }
        }
        let keys = acc?;
        let sep = if is_or { " OR " } else { " AND " };
        return Some(Pushed::Const {
            keys,
            exact,
            desc: format!("({})", descs.join(sep)),
        });
    }
    if is_a(clause, pg_sys::NodeTag::T_NullTest) {
        let n = clause as *mut pg_sys::NullTest;
        if !is_key_var((*n).arg as *mut pg_sys::Node, kc) || (*n).argisrow {
            return None;
        }
        // etcd keys are never NULL.
        let is_null = (*n).nulltesttype == pg_sys::NullTestType::IS_NULL;
        return Some(Pushed::Const {
            keys: if is_null {
                KeySet::empty()
            } else {
                KeySet::all()
            },
            exact: true,
            desc: if is_null {
                "key IS NULL"
            } else {
                "key IS NOT NULL"
            }
            .into(),
        });
    }
    None
}

unsafe fn classify_op(
    func: pg_sys::Oid,
    collid: pg_sys::Oid,
    value: *mut pg_sys::Node,
    key_on_left: bool,
    root: *mut pg_sys::PlannerInfo,
    kc: &KeyColumn,
) -> Option<Pushed> {
    let func = u32::from(func);
    let is_text = kc.repr == Repr::Text;
    let (op, like) = match func {
        pg_sys::F_TEXTEQ | pg_sys::F_BYTEAEQ => (CondOp::Eq, false),
        pg_sys::F_TEXT_LT | pg_sys::F_BYTEALT => (CondOp::Lt, false),
        pg_sys::F_TEXT_LE | pg_sys::F_BYTEALE => (CondOp::Le, false),
        pg_sys::F_TEXT_GT | pg_sys::F_BYTEAGT => (CondOp::Gt, false),
        pg_sys::F_TEXT_GE | pg_sys::F_BYTEAGE => (CondOp::Ge, false),
        pg_sys::F_STARTS_WITH if key_on_left => (CondOp::Prefix, false),
        pg_sys::F_TEXTLIKE | pg_sys::F_BYTEALIKE if key_on_left => (CondOp::Prefix, true),
        _ => return None,
    };
    let text_func = matches!(
        func,
        pg_sys::F_TEXTEQ
            | pg_sys::F_TEXT_LT
            | pg_sys::F_TEXT_LE
            | pg_sys::F_TEXT_GT
            | pg_sys::F_TEXT_GE
            | pg_sys::F_STARTS_WITH
            | pg_sys::F_TEXTLIKE
    );
    if text_func != is_text {
        return None;
    }
    let op = if key_on_left { op } else { op.commute() };
    let ranged = matches!(op, CondOp::Lt | CondOp::Le | CondOp::Gt | CondOp::Ge);
    if is_text {
        if !deterministic(collid) {
            return None;
        }
        if ranged && !orders_like_bytes(Repr::Text, collid) {
            return None;
        }
    }
    let v = strip(value);
    if is_a(v, pg_sys::NodeTag::T_Const) {
        let c = v as *mut pg_sys::Const;
        let Some(bytes) = const_bytes(c, kc.repr) else {
            // key <op> NULL is never true.
            return Some(Pushed::Const {
                keys: KeySet::empty(),
                exact: true,
                desc: format!("key {} NULL", op.name()),
            });
        };
        if like {
            if like_is_equality(&bytes) {
                let lit = like_prefix(&bytes)?.0;
                return Some(Pushed::Const {
                    keys: CondOp::Eq.key_set(&[Some(lit.clone())]),
                    exact: true,
                    desc: format!("key = {}", show(&lit)),
                });
            }
            let (prefix, exact) = like_prefix(&bytes)?;
            if prefix.is_empty() {
                return None;
            }
            return Some(Pushed::Const {
                keys: CondOp::Prefix.key_set(&[Some(prefix.clone())]),
                exact,
                desc: format!("key prefix {}", show(&prefix)),
            });
        }
        let desc = if op == CondOp::Prefix {
            format!("key prefix {}", show(&bytes))
        } else {
            format!("key {} {}", op.name(), show(&bytes))
        };
        return Some(Pushed::Const {
            keys: op.key_set(&[Some(bytes)]),
            exact: true,
            desc,
        });
    }
    if is_runtime_value(root, v, kc) {
        // A LIKE pattern known only at run time narrows to its literal
        // prefix; the clause itself is always rechecked.
        let (op, exact) = if like {
            (CondOp::LikePrefix, false)
        } else {
            (op, true)
        };
        let desc = format!("key {} {}", op.name(), describe_value(root, v));
        return Some(Pushed::Param {
            op,
            expr: v as *mut pg_sys::Expr,
            exact,
            desc,
        });
    }
    None
}

/// The elements of a text[]/bytea[] datum (NULL elements as `None`).
///
/// # Safety
/// `d` must be a non-null array datum whose elements are text or bytea.
pub unsafe fn array_bytes(d: pg_sys::Datum, repr: Repr) -> Vec<Option<Vec<u8>>> {
    let arr = pg_sys::pg_detoast_datum(d.cast_mut_ptr()) as *mut pg_sys::ArrayType;
    let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
    let mut nulls: *mut bool = std::ptr::null_mut();
    let mut n: i32 = 0;
    pg_sys::deconstruct_array(
        arr,
        (*arr).elemtype,
        -1,
        false,
        b'i' as std::ffi::c_char,
        &mut elems,
        &mut nulls,
        &mut n,
    );
    (0..n as usize)
        .map(|i| {
            if *nulls.add(i) {
                None
            } else {
                Some(columns::varlena_bytes(*elems.add(i), repr).into_owned())
            }
        })
        .collect()
}

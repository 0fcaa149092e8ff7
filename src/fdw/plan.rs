//! Planning callbacks: size estimates, paths (plain, sorted, and
//! parameterized by a join on the key) and the ForeignScan plan node with
//! the pushed-down etcd request.

use etcd_fdw_core::keyrange::KeySet;
use etcd_fdw_core::options::{effective_batch_size, effective_fetch_size, TableOptions};
use etcd_fdw_core::plan::{ParamCond, ScanPlan};
use etcd_fdw_core::scan::{requests_for, SortField};
use pgrx::pg_sys;
use pgrx::{PgList, PgMemoryContexts, PgSqlErrorCode};

use super::private;
use super::pushdown::{self, KeyColumn, Pushed};
use crate::catalog;
use crate::columns::{self, Field, Repr, TableColumns};
use crate::error::raise;
use crate::pgver;

/// Cost of one round trip to etcd, in planner cost units (50 sequential
/// page reads: a lookup takes about 200 us).
pub(super) const ROUND_TRIP_COST: f64 = 50.0;
/// Cost of receiving and converting one key-value pair: the benchmark
/// (bench/) reads about 2 us per key in a long scan, a hundredth of a round
/// trip.
const PER_ROW_COST: f64 = 0.5;
/// Assumed size of a table (or a range) whose size we do not know.
const UNKNOWN_TABLE_ROWS: f64 = 10_000.0;
const UNKNOWN_RANGE_ROWS: f64 = 1_000.0;

/// What GetForeignRelSize learnt, kept in `baserel->fdw_private` for the
/// later planning callbacks of the same relation.
pub struct RelState {
    pub table: TableOptions,
    pub columns: TableColumns,
    pub key: Option<KeyColumn>,
    /// Every restriction clause was pushed exactly (run-time ones too).
    pub all_exact: bool,
    pub has_params: bool,
    pub fetch_size: u32,
    pub adaptive_fetch: bool,
    /// Keys per read-only transaction of a key list (`batch_size`).
    pub batch_size: u32,
    /// ANALYZE has counted the table (its row estimate is a count).
    pub analyzed: bool,
    /// The keys the constant conditions leave (run-time ones narrow them).
    pub keys: KeySet,
    /// The relation's range-table index (`baserel->relid`).
    pub relid: u32,
}

/// Table metadata: options and column mapping (cached per backend).
pub fn table_info(relid: pg_sys::Oid) -> catalog::TableInfo {
    catalog::table_info_cached(relid, || read_table_info(relid))
}

/// Table metadata read from the catalogs and checked.
pub fn read_table_info(relid: pg_sys::Oid) -> catalog::TableInfo {
    let (table, server_oid) = catalog::table_options(relid);
    let name = catalog::rel_name(relid);
    // SAFETY: the planner holds a lock on the relation; NoLock is enough.
    let columns = unsafe {
        let rel = pg_sys::RelationIdGetRelation(relid);
        let cols = columns::map_columns((*rel).rd_att, &name);
        pg_sys::RelationClose(rel);
        cols
    };
    check_rowid(&table, &columns, relid);
    (table, server_oid, columns)
}

/// `rowid_column` must name the key column.
pub fn check_rowid(table: &TableOptions, cols: &TableColumns, relid: pg_sys::Oid) {
    // SAFETY: the relation exists (we are planning or altering it).
    let ok = unsafe {
        let rel = pg_sys::RelationIdGetRelation(relid);
        let found = cols
            .by_name((*rel).rd_att, &table.rowid_column)
            .is_some_and(|c| c.field == Field::Key);
        pg_sys::RelationClose(rel);
        found
    };
    if !ok {
        crate::error::raise_with(
            PgSqlErrorCode::ERRCODE_FDW_INVALID_COLUMN_NAME,
            format!(
                "option \"rowid_column\" of foreign table \"{}\" must name its key column, not \"{}\"",
                catalog::rel_name(relid),
                table.rowid_column
            ),
            None,
            Some("Declare a column named key (text or bytea) and set rowid_column 'key'.".into()),
        );
    }
}

pub(super) unsafe fn state<'a>(baserel: *mut pg_sys::RelOptInfo) -> &'a mut RelState {
    &mut *((*baserel).fdw_private as *mut RelState)
}

fn key_column(baserel: *mut pg_sys::RelOptInfo, cols: &TableColumns) -> Option<KeyColumn> {
    cols.find(Field::Key).map(|c| KeyColumn {
        // SAFETY: baserel is the relation being planned.
        varno: unsafe { (*baserel).relid },
        attno: c.index as i16 + 1,
        repr: c.repr,
    })
}

/// Restriction clauses (not pseudoconstant) of a RestrictInfo list.
unsafe fn actual_clauses(list: *mut pg_sys::List) -> Vec<*mut pg_sys::Node> {
    let l = pg_sys::extract_actual_clauses(list, false);
    PgList::<pg_sys::Node>::from_pg(l).iter_ptr().collect()
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_rel_size(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    foreigntableid: pg_sys::Oid,
) {
    let (table, server_oid, columns) = table_info(foreigntableid);
    // Validate the server's options now, so errors surface at plan time.
    let server = catalog::server_info(server_oid, pg_sys::GetUserId());
    let (fetch_size, adaptive_fetch) = effective_fetch_size(&server.options, &table);
    let key = key_column(baserel, &columns);
    let mut base_keys = table.key_set();
    let mut all_exact = true;
    let mut has_params = false;
    let mut local = PgList::<pg_sys::RestrictInfo>::new();
    let rinfos = PgList::<pg_sys::RestrictInfo>::from_pg((*baserel).baserestrictinfo);
    for ri in rinfos.iter_ptr() {
        let pushed = key.and_then(|kc| pushdown::classify(root, (*ri).clause as _, &kc));
        match pushed {
            Some(Pushed::Const { keys, exact, .. }) => {
                base_keys = base_keys.intersect(&keys);
                all_exact &= exact;
                if !exact {
                    local.push(ri);
                }
            }
            Some(Pushed::Param { exact, .. }) => {
                has_params = true;
                all_exact &= exact;
            }
            None => {
                all_exact = false;
                local.push(ri);
            }
        }
    }
    let selectivity = |clauses: *mut pg_sys::List| {
        pg_sys::clauselist_selectivity(
            root,
            clauses,
            (*baserel).relid as i32,
            pg_sys::JoinType::JOIN_INNER,
            std::ptr::null_mut(),
        )
    };
    // reltuples is -1 (before PostgreSQL 14: 0, with relpages 0) until the
    // table is analyzed; our ANALYZE sets relpages to 1.  After ANALYZE it
    // counts the keys in the table's range, and PostgreSQL's statistics
    // of the key column estimate the pushed conditions as well as the
    // local ones; a list of keys still bounds the result.
    let analyzed = (*baserel).tuples >= 0.0 && (*baserel).pages > 0;
    let rows = if base_keys.is_empty() {
        0.0
    } else if analyzed {
        let rows = (*baserel).tuples * selectivity((*baserel).baserestrictinfo);
        base_keys.point_count().map_or(rows, |n| rows.min(n as f64))
    } else {
        estimate_keys(&base_keys, has_params) * selectivity(local.as_ptr())
    };
    (*baserel).rows = rows.max(if base_keys.is_empty() { 0.0 } else { 1.0 });
    let batch_size = effective_batch_size(&server.options, &table);
    let st = RelState {
        table,
        columns,
        key,
        all_exact,
        has_params,
        fetch_size,
        adaptive_fetch,
        batch_size,
        analyzed,
        keys: base_keys,
        relid: (*baserel).relid,
    };
    (*baserel).fdw_private =
        PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(st) as *mut _;
}

/// Rows a key set is expected to hold.
fn estimate_keys(keys: &KeySet, has_params: bool) -> f64 {
    if keys.is_empty() {
        return 0.0;
    }
    if let Some(n) = keys.point_count() {
        return n as f64;
    }
    if has_params {
        return 1.0;
    }
    if keys.is_all() {
        UNKNOWN_TABLE_ROWS
    } else {
        UNKNOWN_RANGE_ROWS * keys.ranges().len() as f64
    }
}

/// (startup, total) cost of reading `rows` keys of `baserel`: one round
/// trip per request the pager will make, plus a per-key cost.
unsafe fn scan_cost(baserel: *mut pg_sys::RelOptInfo, st: &RelState, rows: f64) -> (f64, f64) {
    let row_bytes = f64::from((*(*baserel).reltarget).width.max(1));
    let requests = requests_for(rows, st.fetch_size, st.adaptive_fetch, row_bytes);
    let startup = ROUND_TRIP_COST;
    (
        startup,
        startup + (requests - 1.0) * ROUND_TRIP_COST + rows * PER_ROW_COST,
    )
}

/// Will the scan read its whole range?  Only when nothing can stop it
/// early that the planner can see: the query is this one relation (no
/// join, no semi join an EXISTS became), has no LIMIT, wants every row
/// (`tuple_fraction` 0: not a cursor, not an EXISTS subquery), and the
/// scan has no run-time conditions (it may be rescanned per outer row).
/// Then pages need not start small (with the adaptive page size only).
unsafe fn reads_whole_range(
    root: *mut pg_sys::PlannerInfo,
    st: &RelState,
    limit: Option<u64>,
    params: &[etcd_fdw_core::plan::ParamCond],
) -> bool {
    st.adaptive_fetch
        && limit.is_none()
        && params.is_empty()
        && (*root).tuple_fraction <= 0.0
        && (*root).limit_tuples < 0.0
        && (*(*root).parse).limitCount.is_null()
        && (*(*root).parse).limitOffset.is_null()
        && pg_sys::bms_membership((*root).all_baserels) == pg_sys::BMS_Membership::BMS_SINGLETON
}

/// The first page of a scan that reads its whole range: after ANALYZE,
/// the expected keys (and a margin) in one request when they fit the page
/// byte budget, so a whole small table is one request; otherwise the
/// usual first page (the next one then takes the whole budget).
unsafe fn first_page_of_whole_range(baserel: *mut pg_sys::RelOptInfo, st: &RelState) -> u32 {
    if !st.analyzed {
        return st.fetch_size;
    }
    let row_bytes = f64::from((*(*baserel).reltarget).width.max(16));
    let by_bytes = etcd_fdw_core::scan::PAGE_BYTES as f64 / row_bytes;
    let wanted = (*baserel).rows * 1.25 + 64.0;
    wanted.min(by_bytes).max(f64::from(st.fetch_size)) as u32
}

/// Can a LIMIT of the query be applied by etcd to this relation's scan?
unsafe fn limit_pushable(root: *mut pg_sys::PlannerInfo, st: &RelState) -> Option<u64> {
    let parse = (*root).parse;
    if (*root).limit_tuples <= 0.0
        || !st.all_exact
        || st.has_params
        || (*parse).commandType != pg_sys::CmdType::CMD_SELECT
        || !(*parse).rowMarks.is_null()
        // FETCH FIRST n ROWS WITH TIES needs the rows that tie with the
        // n-th; an etcd limit would cut them off.
        || (*parse).limitOption == pg_sys::LimitOption::LIMIT_OPTION_WITH_TIES
        || pg_sys::bms_membership((*root).all_baserels) != pg_sys::BMS_Membership::BMS_SINGLETON
    {
        return None;
    }
    Some((*root).limit_tuples.ceil() as u64)
}

/// Which etcd sort (if any) yields `pathkeys`.  `Some(None)`: etcd's
/// natural key order already does.  `None`: etcd cannot produce it.
unsafe fn sort_for_pathkeys(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    st: &RelState,
    pathkeys: *mut pg_sys::List,
) -> Option<Option<(SortField, bool)>> {
    let pks = PgList::<pg_sys::PathKey>::from_pg(pathkeys);
    let pk = pks.head()?;
    let ec = (*pk).pk_eclass;
    if (*ec).ec_has_volatile {
        return None;
    }
    let desc = pgver::pathkey_descending(pk)?;
    // The member of the class that is one of our columns.
    let members = PgList::<pg_sys::EquivalenceMember>::from_pg((*ec).ec_members);
    let col = members.iter_ptr().find_map(|em| {
        let v = pushdown::as_var((*em).em_expr as *mut pg_sys::Node)?;
        if (*v).varno as u32 != (*baserel).relid || (*v).varattno < 1 {
            return None;
        }
        st.columns.by_index((*v).varattno as usize - 1)
    })?;
    let family_ok = match col.repr {
        Repr::Text => (*pk).pk_opfamily == pg_sys::TEXT_BTREE_FAM_OID,
        Repr::Bytea => (*pk).pk_opfamily == pg_sys::BYTEA_BTREE_FAM_OID,
        Repr::Int8 => (*pk).pk_opfamily == pg_sys::INTEGER_BTREE_FAM_OID,
        Repr::Io => false,
    };
    if !family_ok || !pushdown::orders_like_bytes(col.repr, (*ec).ec_collation) {
        return None;
    }
    let limited = limit_pushable(root, st).is_some();
    match col.field {
        // Keys are unique, so key order decides every later pathkey too.
        Field::Key if !desc => Some(None),
        Field::Key if limited => Some(Some((SortField::Key, true))),
        Field::Value if st.table.keys_only => None,
        Field::Lease | Field::Key => None,
        // Rows of the transaction's pending writes have NULL metadata,
        // which the scan sorts PostgreSQL's default way only.
        _ if (*pk).pk_nulls_first != desc => None,
        f if limited && pks.len() == 1 => {
            let sf = SortField::from_name(f.name())?;
            Some(Some((sf, desc)))
        }
        _ => None,
    }
}

/// Encode a path's promised sort in its fdw_private.
unsafe fn sort_private(sort: Option<(SortField, bool)>) -> *mut pg_sys::List {
    let s = match sort {
        None => "none".to_string(),
        Some((f, d)) => format!("{} {}", f.name(), if d { "desc" } else { "asc" }),
    };
    private::to_private(&s)
}

/// The sort a path promised (see [`sort_private`]).  A path without our
/// fdw_private is a bug: raise rather than drop a promised order.
unsafe fn path_sort(path: *mut pg_sys::ForeignPath) -> Option<(SortField, bool)> {
    let s = private::from_private((*path).fdw_private).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "etcd_fdw: a foreign path lost its sort",
        )
    });
    if s == "none" {
        return None;
    }
    let parsed = s
        .split_once(' ')
        .and_then(|(f, d)| Some((SortField::from_name(f)?, d == "desc")));
    if parsed.is_none() {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("etcd_fdw: malformed path sort \"{s}\""),
        );
    }
    parsed
}

/// Add a ForeignPath promising `pathkeys` (delivered by `sort`).
#[allow(clippy::too_many_arguments)]
unsafe fn add_scan_path(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    rows: f64,
    (startup, total): (f64, f64),
    pathkeys: *mut pg_sys::List,
    required_outer: pg_sys::Relids,
    sort: Option<(SortField, bool)>,
) {
    let p = pgver::create_foreignscan_path(
        root,
        baserel,
        rows,
        startup,
        total,
        pathkeys,
        required_outer,
        sort_private(sort),
    );
    pg_sys::add_path(baserel, p as *mut pg_sys::Path);
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_paths(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    _foreigntableid: pg_sys::Oid,
) {
    let st = state(baserel);
    let rows = (*baserel).rows;
    let cost = scan_cost(baserel, st, rows);
    add_scan_path(
        root,
        baserel,
        rows,
        cost,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        None,
    );

    // A path in the order the query wants, when etcd can deliver it.
    if !(*root).query_pathkeys.is_null() {
        if let Some(sort) = sort_for_pathkeys(root, baserel, st, (*root).query_pathkeys) {
            // A pushed sort costs etcd a little; the natural order is free.
            let extra = if sort.is_some() { 1.0 } else { 0.0 };
            add_scan_path(
                root,
                baserel,
                rows,
                (cost.0 + extra, cost.1 + extra),
                (*root).query_pathkeys,
                std::ptr::null_mut(),
                sort,
            );
        }
    }

    add_parameterized_paths(root, baserel, st);
}

/// Matches equivalence members that are our key column.
unsafe extern "C-unwind" fn ec_member_is_key(
    _root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    _ec: *mut pg_sys::EquivalenceClass,
    em: *mut pg_sys::EquivalenceMember,
    arg: *mut std::ffi::c_void,
) -> bool {
    let attno = *(arg as *const i16);
    let Some(v) = pushdown::as_var((*em).em_expr as *mut pg_sys::Node) else {
        return false;
    };
    (*v).varno as u32 == (*rel).relid && (*v).varattno == attno && (*v).varlevelsup == 0
}

/// For each join clause `key = other.col`, a path that looks the key up
/// once per outer row (nested loop with a parameter).
unsafe fn add_parameterized_paths(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    st: &RelState,
) {
    let Some(kc) = st.key else { return };
    let mut candidates: Vec<*mut pg_sys::RestrictInfo> = Vec::new();
    let mut attno = kc.attno;
    let ec_clauses = pg_sys::generate_implied_equalities_for_column(
        root,
        baserel,
        Some(ec_member_is_key),
        &mut attno as *mut i16 as *mut std::ffi::c_void,
        (*baserel).lateral_referencers,
    );
    candidates.extend(PgList::<pg_sys::RestrictInfo>::from_pg(ec_clauses).iter_ptr());
    candidates.extend(PgList::<pg_sys::RestrictInfo>::from_pg((*baserel).joininfo).iter_ptr());

    let mut seen: Vec<pg_sys::Relids> = Vec::new();
    for ri in candidates {
        if !pg_sys::join_clause_is_movable_to(ri, baserel) {
            continue;
        }
        match pushdown::classify(root, (*ri).clause as _, &kc) {
            Some(Pushed::Param {
                op: etcd_fdw_core::plan::CondOp::Eq | etcd_fdw_core::plan::CondOp::In,
                ..
            }) => {}
            _ => continue,
        }
        let required_outer = pg_sys::bms_difference((*ri).clause_relids, (*baserel).relids);
        let required_outer = pg_sys::bms_union(required_outer, (*baserel).lateral_relids);
        if pgver::bms_is_empty(required_outer)
            || seen.iter().any(|r| pg_sys::bms_equal(*r, required_outer))
        {
            continue;
        }
        seen.push(required_outer);
        let ppi = pg_sys::get_baserel_parampathinfo(root, baserel, required_outer);
        let rows = if ppi.is_null() {
            1.0
        } else {
            (*ppi).ppi_rows.max(1.0)
        };
        let cost = scan_cost(baserel, st, rows);
        add_scan_path(
            root,
            baserel,
            rows,
            cost,
            std::ptr::null_mut(),
            required_outer,
            None,
        );
    }
}

/// The attributes (0-based) of this relation the query never reads:
/// neither in its target list nor in a clause evaluated locally.  Empty
/// when there is a whole-row reference (which UPDATE of a foreign table
/// always adds).
unsafe fn unused_columns(
    baserel: *mut pg_sys::RelOptInfo,
    st: &RelState,
    local: *mut pg_sys::List,
) -> Vec<u16> {
    let mut attrs: *mut pg_sys::Bitmapset = std::ptr::null_mut();
    pg_sys::pull_varattnos(
        (*(*baserel).reltarget).exprs as *mut pg_sys::Node,
        (*baserel).relid,
        &mut attrs,
    );
    pg_sys::pull_varattnos(local as *mut pg_sys::Node, (*baserel).relid, &mut attrs);
    let offset = pg_sys::FirstLowInvalidHeapAttributeNumber;
    if pg_sys::bms_is_member(-offset, attrs) {
        return Vec::new();
    }
    (st.columns.columns.iter())
        .map(|c| c.index)
        .filter(|&i| !pg_sys::bms_is_member(i as i32 + 1 - offset, attrs))
        .map(|i| i as u16)
        .collect()
}

/// What the restriction clauses of a scan push down to etcd.
pub(super) struct Pushdown {
    /// The table's keys intersected with every constant condition.
    pub keys: KeySet,
    /// Conditions with run-time values (`fdw_exprs[expr_index]`).
    pub params: Vec<ParamCond>,
    /// Each pushed condition, for EXPLAIN.
    pub pushed: Vec<String>,
    pub fdw_exprs: PgList<pg_sys::Node>,
    /// Clauses PostgreSQL evaluates (not pushed, or pushed loosely).
    pub local: PgList<pg_sys::Node>,
    /// Nothing is left to evaluate locally.
    pub all_exact: bool,
}

/// Split `clauses` of the relation `st` describes into what etcd does
/// and what stays local.
///
/// # Safety
/// Planner context: `clauses` are expressions of the query being planned.
pub(super) unsafe fn push_clauses(
    root: *mut pg_sys::PlannerInfo,
    st: &RelState,
    clauses: Vec<*mut pg_sys::Node>,
) -> Pushdown {
    let mut keys = st.table.key_set();
    let mut params = Vec::new();
    let mut pushed_desc = Vec::new();
    let mut fdw_exprs = PgList::<pg_sys::Node>::new();
    let mut local = PgList::<pg_sys::Node>::new();
    let mut all_exact = true;
    for clause in clauses {
        let pushed = st.key.and_then(|kc| pushdown::classify(root, clause, &kc));
        match pushed {
            Some(p) => {
                let exact = p.exact();
                match p {
                    Pushed::Const { keys: k, desc, .. } => {
                        keys = keys.intersect(&k);
                        pushed_desc.push(desc);
                    }
                    Pushed::Param { op, expr, desc, .. } => {
                        params.push(ParamCond {
                            op,
                            expr_index: fdw_exprs.len(),
                        });
                        fdw_exprs.push(expr as *mut pg_sys::Node);
                        pushed_desc.push(desc);
                    }
                }
                if !exact {
                    all_exact = false;
                    local.push(clause);
                }
            }
            None => {
                all_exact = false;
                local.push(clause);
            }
        }
    }
    Pushdown {
        keys,
        params,
        pushed: pushed_desc,
        fdw_exprs,
        local,
        all_exact,
    }
}

/// Restriction clauses (not pseudoconstant) of a relation.
///
/// # Safety
/// `rel` is a base relation of the query being planned.
pub(super) unsafe fn restriction_clauses(rel: *mut pg_sys::RelOptInfo) -> Vec<*mut pg_sys::Node> {
    actual_clauses((*rel).baserestrictinfo)
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_plan(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    _foreigntableid: pg_sys::Oid,
    best_path: *mut pg_sys::ForeignPath,
    tlist: *mut pg_sys::List,
    scan_clauses: *mut pg_sys::List,
    outer_plan: *mut pg_sys::Plan,
) -> *mut pg_sys::ForeignScan {
    if (*baserel).reloptkind == pg_sys::RelOptKind::RELOPT_UPPER_REL {
        return super::upper::count_plan(root, baserel, tlist);
    }
    let st = state(baserel);
    let Pushdown {
        keys,
        params,
        pushed: pushed_desc,
        fdw_exprs,
        local,
        all_exact,
    } = push_clauses(root, st, actual_clauses(scan_clauses));

    let path_sort = path_sort(best_path);
    let query_order_satisfied = (*root).query_pathkeys.is_null()
        || pg_sys::pathkeys_contained_in((*root).query_pathkeys, (*best_path).path.pathkeys);
    let limit = if all_exact && params.is_empty() && query_order_satisfied {
        limit_pushable(root, st)
    } else {
        None
    };
    if path_sort.is_some_and(|(f, d)| (f != SortField::Key || d) && limit.is_none()) {
        // Only planned together with a pushable LIMIT; never expected.
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "etcd_fdw planned a sort that needs a LIMIT it cannot push down",
        );
    }
    let unused = unused_columns(baserel, st, local.as_ptr());
    let needs_value = st
        .columns
        .find(Field::Value)
        .is_some_and(|vc| !unused.contains(&(vc.index as u16)));
    let whole_range = reads_whole_range(root, st, limit, &params);
    let fetch_size = if whole_range {
        first_page_of_whole_range(baserel, st)
    } else {
        st.fetch_size
    };
    let plan = ScanPlan {
        keys,
        params,
        sort: path_sort,
        limit,
        whole_range,
        keys_only: st.table.keys_only || !needs_value,
        pushed: pushed_desc,
        unused,
        batch_size: st.batch_size,
        ..ScanPlan::whole_table(&st.table, fetch_size, st.adaptive_fetch)
    };
    let private = private::to_private(&plan.encode());
    pg_sys::make_foreignscan(
        tlist,
        local.into_pg(),
        (*baserel).relid,
        fdw_exprs.into_pg(),
        private,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        outer_plan,
    )
}

/// The ScanPlan stored in a ForeignScan's fdw_private.  A plan that is
/// missing or does not decode is an ERROR, never a scan of nothing.
///
/// # Safety
/// `private` must be the fdw_private list built by [`get_foreign_plan`].
pub unsafe fn decode_plan(private: *mut pg_sys::List) -> ScanPlan {
    private::from_private(private)
        .and_then(ScanPlan::decode)
        .unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "etcd_fdw: malformed scan plan",
            )
        })
}

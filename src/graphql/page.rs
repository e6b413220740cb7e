//! Connections as PostGraphile pages them: `first` / `last` / `offset` / `before` / `after`
//! over an ordering (`orderBy`, always completed by the primary key so that it is total) and
//! an equality `condition`. Cursors carry the ordering's names and the row's values for it,
//! so a page continues by keyset (`WHERE (…) > (…)`), not by counting rows. Only SELECTs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use async_graphql::{EnumType, MaybeUndefined, Object};
use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Row};

use super::error::Internal;
use super::rows::Loaders;
use super::scalars::{
    base64_decode, base64_encode, format_datetime, parse_datetime, Cursor, Datetime,
};

/// The most rows one page may ask for (`first` / `last`), and what a page without either
/// holds at most.
pub const MAX_PAGE: i32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Text,
    Time,
}

/// A column that can be ordered and filtered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Column {
    pub sql: &'static str,
    pub kind: Kind,
    pub nullable: bool,
}

impl Column {
    pub const fn text(sql: &'static str, nullable: bool) -> Column {
        Column {
            sql,
            kind: Kind::Text,
            nullable,
        }
    }

    pub const fn time(sql: &'static str, nullable: bool) -> Column {
        Column {
            sql,
            kind: Kind::Time,
            nullable,
        }
    }
}

/// A column's value, as compared in SQL and carried in a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Text(Option<String>),
    Time(Option<DateTime<Utc>>),
}

impl Value {
    fn is_null(&self) -> bool {
        matches!(self, Value::Text(None) | Value::Time(None))
    }

    fn to_json(&self) -> Json {
        match self {
            Value::Text(s) => s.clone().map_or(Json::Null, Json::String),
            Value::Time(t) => t.map_or(Json::Null, |t| Json::String(format_datetime(t))),
        }
    }

    fn from_json(kind: Kind, v: &Json) -> Option<Value> {
        match (kind, v) {
            (Kind::Text, Json::Null) => Some(Value::Text(None)),
            (Kind::Time, Json::Null) => Some(Value::Time(None)),
            (Kind::Text, Json::String(s)) => Some(Value::Text(Some(s.clone()))),
            (Kind::Time, Json::String(s)) => parse_datetime(s).map(|t| Value::Time(Some(t))),
            _ => None,
        }
    }
}

/// One step of an ordering. Ascending puts NULLs last, descending first (PostgreSQL's
/// defaults, so the indexes serve both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Term {
    pub col: Column,
    pub desc: bool,
}

/// A table a connection pages through; every column is read through the alias `t`.
pub struct Table {
    pub name: &'static str,
    /// The select list (`t.a, t.b, …`).
    pub select: &'static str,
    /// What makes a row visible at the top level (tombstones never are).
    pub visible: &'static str,
}

/// A row type that connections return.
pub trait Node: for<'r> FromRow<'r, PgRow> + Send + Sync + Unpin + 'static {
    const TABLE: &'static Table;
    fn value(&self, col: &Column) -> Value;
}

/// An `orderBy` enum: `NATURAL` has no term; `PRIMARY_KEY_*` is the primary key's.
pub trait OrderBy: EnumType {
    /// The primary key, which completes every ordering.
    const PRIMARY_KEY: Column;
    fn term(self) -> Option<Term>;
}

/// A `condition` input: the equalities it asks for, anded.
pub trait Condition {
    fn filter(&self) -> Vec<(Column, Value)>;
}

/// Which rows of the table: the visible ones, or those of one parent (a customer's
/// subscriptions: the parent is visible already).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    All,
    Child { column: &'static str, key: String },
}

/// `first` / `last` / `offset` / `before` / `after` as given.
#[derive(Debug, Default)]
pub struct Args {
    pub first: Option<i32>,
    pub last: Option<i32>,
    pub offset: Option<i32>,
    pub before: Option<Cursor>,
    pub after: Option<Cursor>,
}

impl Args {
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
            && self.last.is_none()
            && self.offset.is_none()
            && self.before.is_none()
            && self.after.is_none()
    }
}

/// Everything one page query needs; hashable so that a dataloader can batch the pages of
/// many parents that share it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Spec {
    /// The complete ordering (ends with the primary key).
    pub order: Vec<Term>,
    /// The `orderBy` names the cursors carry.
    pub prefix: Vec<String>,
    pub filter: Vec<(Column, Value)>,
    pub limit: i64,
    /// `last` given: the page is taken from the end of the window.
    pub backward: bool,
    pub offset: i64,
    pub after: Option<Vec<Value>>,
    pub before: Option<Vec<Value>>,
    pub want_rows: bool,
    pub want_total: bool,
}

impl Spec {
    /// Checks the arguments (PostGraphile refuses `first` with `last`; pages are capped at
    /// [`MAX_PAGE`]) and decodes the cursors against the ordering.
    pub fn new<O: OrderBy>(
        args: Args,
        order_by: Option<&[O]>,
        filter: Vec<(Column, Value)>,
    ) -> Result<Spec, String> {
        let (order, prefix) = ordering(order_by, O::PRIMARY_KEY);
        if args.first.is_some() && args.last.is_some() {
            return Err("Combining `first` and `last` is not supported.".into());
        }
        let size = |name: &str, n: i32| -> Result<i64, String> {
            if n < 0 {
                return Err(format!("`{name}` must not be negative."));
            }
            if n > MAX_PAGE {
                return Err(format!("`{name}` must be at most {MAX_PAGE}."));
            }
            Ok(i64::from(n))
        };
        let limit = match (args.first, args.last) {
            (Some(n), _) => size("first", n)?,
            (_, Some(n)) => size("last", n)?,
            _ => i64::from(MAX_PAGE),
        };
        let offset = match args.offset {
            Some(n) if n < 0 => return Err("`offset` must not be negative.".into()),
            Some(n) => i64::from(n),
            None => 0,
        };
        let decode = |c: Option<Cursor>| -> Result<Option<Vec<Value>>, String> {
            c.map(|c| decode_cursor(&c.0, &prefix, &order).ok_or_else(|| "Invalid cursor.".into()))
                .transpose()
        };
        let after = decode(args.after)?;
        let before = decode(args.before)?;
        Ok(Spec {
            backward: args.last.is_some(),
            order,
            prefix,
            filter,
            limit,
            offset,
            after,
            before,
            want_rows: true,
            want_total: true,
        })
    }

    /// The spec of a connection asked with no arguments at all (`orderBy` at its default).
    pub fn plain<O: OrderBy>() -> Spec {
        Spec {
            order: vec![Term {
                col: O::PRIMARY_KEY,
                desc: false,
            }],
            prefix: vec!["primary_key_asc".into()],
            filter: Vec::new(),
            limit: i64::from(MAX_PAGE),
            backward: false,
            offset: 0,
            after: None,
            before: None,
            want_rows: true,
            want_total: true,
        }
    }
}

/// The complete ordering and the cursor prefix of an `orderBy` list.
fn ordering<O: OrderBy>(order_by: Option<&[O]>, pk: Column) -> (Vec<Term>, Vec<String>) {
    let list = order_by.unwrap_or_default();
    let mut order: Vec<Term> = list.iter().filter_map(|o| o.term()).collect();
    if !order.iter().any(|t| t.col == pk) {
        order.push(Term {
            col: pk,
            desc: false,
        });
    }
    let mut prefix: Vec<String> = list
        .iter()
        .map(|o| enum_name(*o).to_ascii_lowercase())
        .collect();
    if prefix.is_empty() {
        prefix.push("natural".into());
    }
    (order, prefix)
}

fn enum_name<O: EnumType>(value: O) -> &'static str {
    O::items()
        .iter()
        .find(|i| i.value == value)
        .map_or("", |i| i.name)
}

/// `base64(JSON [name…, [value…]])`, like PostGraphile's.
pub fn encode_cursor(prefix: &[String], values: &[Value]) -> Cursor {
    let mut parts: Vec<Json> = prefix.iter().map(|p| Json::String(p.clone())).collect();
    parts.push(Json::Array(values.iter().map(Value::to_json).collect()));
    Cursor(base64_encode(Json::Array(parts).to_string().as_bytes()))
}

fn decode_cursor(cursor: &str, prefix: &[String], order: &[Term]) -> Option<Vec<Value>> {
    let bytes = base64_decode(cursor)?;
    let Json::Array(mut parts) = serde_json::from_slice(&bytes).ok()? else {
        return None;
    };
    let Some(Json::Array(values)) = parts.pop() else {
        return None;
    };
    if parts.len() != prefix.len()
        || parts.iter().zip(prefix).any(|(p, q)| p.as_str() != Some(q))
        || values.len() != order.len()
    {
        return None;
    }
    order
        .iter()
        .zip(&values)
        .map(|(t, v)| {
            let value = Value::from_json(t.col.kind, v)?;
            (t.col.nullable || !value.is_null()).then_some(value)
        })
        .collect()
}

/// Adds `col = value` (`col IS NULL` for an explicit null) to a condition.
pub fn text_condition(out: &mut Vec<(Column, Value)>, col: Column, v: &MaybeUndefined<String>) {
    match v {
        MaybeUndefined::Undefined => {}
        MaybeUndefined::Null => out.push((col, Value::Text(None))),
        MaybeUndefined::Value(s) => out.push((col, Value::Text(Some(s.clone())))),
    }
}

pub fn time_condition(out: &mut Vec<(Column, Value)>, col: Column, v: &MaybeUndefined<Datetime>) {
    match v {
        MaybeUndefined::Undefined => {}
        MaybeUndefined::Null => out.push((col, Value::Time(None))),
        MaybeUndefined::Value(t) => out.push((col, Value::Time(Some(t.0)))),
    }
}

/// What a connection's selection asks for: rows (nodes, edges or pageInfo), the count.
fn wants(ctx: &async_graphql::Context<'_>) -> (bool, bool) {
    let la = ctx.look_ahead();
    let rows =
        la.field("nodes").exists() || la.field("edges").exists() || la.field("pageInfo").exists();
    (rows, la.field("totalCount").exists())
}

/// The complexity of a connection: its children once per row it may return.
pub fn cost(first: Option<i32>, last: Option<i32>, default: usize, children: usize) -> usize {
    let rows = first.or(last).map_or(default, |n| {
        usize::try_from(n.clamp(1, MAX_PAGE)).unwrap_or(1)
    });
    children.saturating_mul(rows).saturating_add(1)
}

/// One page: rows in display order, whether the window had more rows in the paging
/// direction, and the count of the whole collection when asked.
#[derive(Debug)]
pub struct Page<R> {
    pub rows: Vec<R>,
    pub has_more: bool,
    pub total: Option<i64>,
}

impl<R> Page<R> {
    fn cut(mut rows: Vec<R>, limit: i64, backward: bool, total: Option<i64>) -> Self {
        let has_more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        if backward {
            rows.reverse();
        }
        Page {
            rows,
            has_more,
            total,
        }
    }

    /// A page cut from rows already loaded in primary-key order (at most one beyond
    /// [`MAX_PAGE`]), for a connection asked with no arguments.
    pub fn from_preloaded(rows: Vec<R>) -> Self {
        let total = (rows.len() as i64 <= i64::from(MAX_PAGE)).then_some(rows.len() as i64);
        Self::cut(rows, i64::from(MAX_PAGE), false, total)
    }
}

// ---- SQL --------------------------------------------------------------------------------

enum Within<'a> {
    Scope(&'a Scope),
    /// Inside `unnest($1) AS k(key) CROSS JOIN LATERAL (…)`.
    Lateral(&'static str),
}

fn push_within(qb: &mut QueryBuilder<'_, Postgres>, table: &Table, within: &Within<'_>) {
    match within {
        Within::Scope(Scope::All) => {
            qb.push(table.visible);
        }
        Within::Scope(Scope::Child { column, key }) => {
            qb.push("t.")
                .push(*column)
                .push(" = ")
                .push_bind(key.clone());
        }
        Within::Lateral(column) => {
            qb.push("t.").push(*column).push(" = k.key");
        }
    }
}

fn push_value(qb: &mut QueryBuilder<'_, Postgres>, v: &Value) {
    match v {
        Value::Text(s) => qb.push_bind(s.clone()),
        Value::Time(t) => qb.push_bind(*t),
    };
}

fn push_eq(qb: &mut QueryBuilder<'_, Postgres>, col: &Column, v: &Value) {
    if let Value::Text(Some(s)) = v {
        if !crate::access::storable(s) {
            qb.push("FALSE"); // nothing holds it, and PostgreSQL would refuse it
            return;
        }
    }
    qb.push("t.").push(col.sql);
    if v.is_null() {
        qb.push(" IS NULL");
    } else {
        qb.push(" = ");
        push_value(qb, v);
    }
}

/// `t.col` strictly beyond `v`, going descending (NULLs first) when `desc`, else ascending
/// (NULLs last). Never true where it should be false; NULL only where false is meant.
fn push_step(qb: &mut QueryBuilder<'_, Postgres>, col: &Column, v: &Value, desc: bool) {
    let c = format!("t.{}", col.sql);
    match (desc, v.is_null()) {
        (false, true) => {
            qb.push("FALSE");
        }
        (true, true) => {
            qb.push(&c).push(" IS NOT NULL");
        }
        (false, false) => {
            qb.push(if col.nullable { "(" } else { "" })
                .push(&c)
                .push(" > ");
            push_value(qb, v);
            if col.nullable {
                qb.push(" OR ").push(&c).push(" IS NULL)");
            }
        }
        (true, false) => {
            qb.push(&c).push(" < ");
            push_value(qb, v);
        }
    }
}

/// Rows strictly after `values` in `order` (strictly before when `rev`).
fn push_beyond(qb: &mut QueryBuilder<'_, Postgres>, order: &[Term], values: &[Value], rev: bool) {
    qb.push("(");
    for (i, term) in order.iter().enumerate() {
        if i > 0 {
            qb.push(" OR ");
        }
        qb.push("(");
        for (t, v) in order.iter().zip(values).take(i) {
            push_eq(qb, &t.col, v);
            qb.push(" AND ");
        }
        push_step(qb, &term.col, &values[i], term.desc != rev);
        qb.push(")");
    }
    qb.push(")");
}

/// The WHERE clause: scope, condition, and (with `window`) the cursors.
fn push_where(
    qb: &mut QueryBuilder<'_, Postgres>,
    table: &Table,
    within: &Within<'_>,
    spec: &Spec,
    window: bool,
) {
    qb.push(" WHERE ");
    push_within(qb, table, within);
    for (col, v) in &spec.filter {
        qb.push(" AND ");
        push_eq(qb, col, v);
    }
    if window {
        if let Some(after) = &spec.after {
            qb.push(" AND ");
            push_beyond(qb, &spec.order, after, false);
        }
        if let Some(before) = &spec.before {
            qb.push(" AND ");
            push_beyond(qb, &spec.order, before, true);
        }
    }
}

fn push_order_limit(qb: &mut QueryBuilder<'_, Postgres>, spec: &Spec) {
    qb.push(" ORDER BY ");
    for (i, term) in spec.order.iter().enumerate() {
        if i > 0 {
            qb.push(", ");
        }
        let desc = term.desc != spec.backward;
        qb.push("t.").push(term.col.sql);
        qb.push(if desc {
            " DESC NULLS FIRST"
        } else {
            " ASC NULLS LAST"
        });
    }
    qb.push(" LIMIT ").push_bind(spec.limit + 1);
    qb.push(" OFFSET ").push_bind(spec.offset);
}

async fn fetch_rows<R: Node>(
    pool: &PgPool,
    scope: &Scope,
    spec: &Spec,
) -> Result<Vec<R>, Internal> {
    if !spec.want_rows {
        return Ok(Vec::new());
    }
    let table = R::TABLE;
    let mut qb = QueryBuilder::new(format!("SELECT {} FROM {} t", table.select, table.name));
    push_where(&mut qb, table, &Within::Scope(scope), spec, true);
    push_order_limit(&mut qb, spec);
    Ok(qb.build_query_as::<R>().fetch_all(pool).await?)
}

/// `totalCount`: the rows that match the condition, whatever the cursors.
pub async fn count(
    pool: &PgPool,
    table: &Table,
    scope: &Scope,
    spec: &Spec,
) -> Result<i64, Internal> {
    let mut qb = QueryBuilder::new(format!("SELECT count(*) FROM {} t", table.name));
    push_where(&mut qb, table, &Within::Scope(scope), spec, false);
    Ok(qb.build_query_scalar::<i64>().fetch_one(pool).await?)
}

/// One page of the rows in `scope`.
pub async fn fetch<R: Node>(
    pool: &PgPool,
    scope: &Scope,
    spec: &Spec,
) -> Result<Page<R>, Internal> {
    let total = async {
        match spec.want_total {
            true => count(pool, R::TABLE, scope, spec).await.map(Some),
            false => Ok(None),
        }
    };
    let (rows, total) = futures::try_join!(fetch_rows::<R>(pool, scope, spec), total)?;
    Ok(Page::cut(rows, spec.limit, spec.backward, total))
}

/// The same page for each parent in `keys` (rows whose `column` is the key), in one query
/// for the rows and one for the counts.
pub async fn fetch_children<R: Node>(
    pool: &PgPool,
    column: &'static str,
    keys: &[String],
    spec: &Spec,
) -> Result<HashMap<String, Page<R>>, Internal> {
    let table = R::TABLE;
    let rows = async {
        let mut by_key: HashMap<String, Vec<R>> = HashMap::new();
        if !spec.want_rows {
            return Ok::<_, Internal>(by_key);
        }
        let mut qb = QueryBuilder::new("SELECT k.key AS batch_key, x.* FROM unnest(");
        qb.push_bind(keys.to_vec());
        qb.push("::text[]) AS k(key) CROSS JOIN LATERAL (SELECT ");
        qb.push(table.select)
            .push(" FROM ")
            .push(table.name)
            .push(" t");
        push_where(&mut qb, table, &Within::Lateral(column), spec, true);
        push_order_limit(&mut qb, spec);
        qb.push(") x");
        for row in qb.build().fetch_all(pool).await? {
            let key: String = row.try_get("batch_key")?;
            by_key.entry(key).or_default().push(R::from_row(&row)?);
        }
        Ok(by_key)
    };
    let totals = async {
        let mut totals: HashMap<String, i64> = HashMap::new();
        if !spec.want_total {
            return Ok::<_, Internal>(totals);
        }
        let mut qb = QueryBuilder::new(format!(
            "SELECT t.{column}, count(*) FROM {} t WHERE t.{column} = ANY(",
            table.name
        ));
        qb.push_bind(keys.to_vec()).push(")");
        for (col, v) in &spec.filter {
            qb.push(" AND ");
            push_eq(&mut qb, col, v);
        }
        qb.push(" GROUP BY 1");
        for row in qb.build().fetch_all(pool).await? {
            totals.insert(row.try_get(0)?, row.try_get(1)?);
        }
        Ok(totals)
    };
    let (mut rows, totals) = futures::try_join!(rows, totals)?;
    Ok(keys
        .iter()
        .map(|k| {
            let total = spec.want_total.then(|| totals.get(k).copied().unwrap_or(0));
            let rows = rows.remove(k).unwrap_or_default();
            (k.clone(), Page::cut(rows, spec.limit, spec.backward, total))
        })
        .collect())
}

/// Whether a row exists in `scope` matching the condition, inside the window when
/// `window`, and beyond (or, negated, not beyond) each bound.
async fn exists(
    pool: &PgPool,
    table: &Table,
    scope: &Scope,
    spec: &Spec,
    window: bool,
    bounds: &[(&[Value], Bound)],
) -> Result<bool, Internal> {
    let mut qb = QueryBuilder::new(format!("SELECT EXISTS (SELECT 1 FROM {} t", table.name));
    push_where(&mut qb, table, &Within::Scope(scope), spec, window);
    for (values, bound) in bounds {
        qb.push(" AND ");
        match bound {
            Bound::After => push_beyond(&mut qb, &spec.order, values, false),
            Bound::Before => push_beyond(&mut qb, &spec.order, values, true),
            Bound::NotBefore => {
                qb.push("NOT COALESCE(");
                push_beyond(&mut qb, &spec.order, values, true);
                qb.push(", FALSE)");
            }
            Bound::NotAfter => {
                qb.push("NOT COALESCE(");
                push_beyond(&mut qb, &spec.order, values, false);
                qb.push(", FALSE)");
            }
        }
    }
    qb.push(")");
    Ok(qb.build_query_scalar::<bool>().fetch_one(pool).await?)
}

#[derive(Debug, Clone, Copy)]
enum Bound {
    After,
    Before,
    NotBefore,
    NotAfter,
}

// ---- the GraphQL side --------------------------------------------------------------------

/// A connection as resolved: its page, with what it takes to answer `edges.cursor`,
/// `pageInfo` and `totalCount`. The `connection!` types wrap it under PostGraphile's names.
pub struct Connection<R> {
    pub pool: PgPool,
    pub scope: Scope,
    pub spec: Arc<Spec>,
    pub page: Arc<Page<R>>,
}

impl<R: Node> Connection<R> {
    /// The one resolver of every connection field (`customers`, `subscriptions`, a
    /// customer's `subscriptions`): checks the arguments against the ordering (see
    /// [`Spec::new`]), reads from the selection whether rows and the count are wanted, has
    /// `load` fetch the page so described, and keeps what `pageInfo` and `totalCount` need.
    pub async fn resolve<O, C, L, F>(
        ctx: &async_graphql::Context<'_>,
        scope: Scope,
        args: Args,
        order_by: Option<Vec<O>>,
        condition: Option<C>,
        load: L,
    ) -> async_graphql::Result<Self>
    where
        O: OrderBy,
        C: Condition,
        L: FnOnce(Arc<Spec>) -> F,
        F: Future<Output = Result<Arc<Page<R>>, Internal>>,
    {
        let filter = condition.as_ref().map(C::filter).unwrap_or_default();
        let mut spec = Spec::new(args, order_by.as_deref(), filter)?;
        (spec.want_rows, spec.want_total) = wants(ctx);
        let spec = Arc::new(spec);
        let page = load(spec.clone()).await?;
        Ok(Connection {
            pool: Loaders::of(ctx).pool.clone(),
            scope,
            spec,
            page,
        })
    }

    pub fn rows(&self) -> &[R] {
        &self.page.rows
    }

    pub fn cursor(&self, row: &R) -> Cursor {
        encode_cursor(&self.spec.prefix, &key_of(row, &self.spec.order))
    }

    pub async fn total_count(&self) -> Result<i32, Internal> {
        let n = match self.page.total {
            Some(n) => n,
            None => count(&self.pool, R::TABLE, &self.scope, &self.spec).await?,
        };
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    }

    pub fn page_info(&self) -> PageInfo {
        let order = &self.spec.order;
        PageInfo {
            pool: self.pool.clone(),
            table: R::TABLE,
            scope: self.scope.clone(),
            spec: self.spec.clone(),
            first: self.page.rows.first().map(|r| key_of(r, order)),
            last: self.page.rows.last().map(|r| key_of(r, order)),
            has_more: self.page.has_more,
        }
    }
}

fn key_of<R: Node>(row: &R, order: &[Term]) -> Vec<Value> {
    order.iter().map(|t| row.value(&t.col)).collect()
}

/// Information about pagination in a connection. `hasNextPage` / `hasPreviousPage` say
/// whether any row of the collection lies after the last / before the first edge; the side
/// the page was taken from is known from the page query, the other side costs one
/// `EXISTS` query, and only when cursors or an offset make it an open question.
pub struct PageInfo {
    pool: PgPool,
    table: &'static Table,
    scope: Scope,
    spec: Arc<Spec>,
    first: Option<Vec<Value>>,
    last: Option<Vec<Value>>,
    has_more: bool,
}

impl PageInfo {
    async fn probe(&self, window: bool, bounds: &[(&[Value], Bound)]) -> Result<bool, Internal> {
        exists(
            &self.pool,
            self.table,
            &self.scope,
            &self.spec,
            window,
            bounds,
        )
        .await
    }
}

#[Object]
impl PageInfo {
    /// When paginating forwards, are there more items?
    async fn has_next_page(&self) -> async_graphql::Result<bool> {
        let s = &self.spec;
        Ok(match (&self.last, s.backward) {
            (Some(_), false) if self.has_more => true,
            (Some(last), false) => match &s.before {
                Some(_) => self.probe(false, &[(last, Bound::After)]).await?,
                None => false,
            },
            (Some(_), true) if s.offset > 0 => true,
            (Some(last), true) => match &s.before {
                Some(_) => self.probe(false, &[(last, Bound::After)]).await?,
                None => false,
            },
            (None, backward) => {
                let beyond_before = match &s.before {
                    Some(b) => self.probe(false, &[(b, Bound::NotBefore)]).await?,
                    None => false,
                };
                beyond_before || (backward && s.offset > 0 && self.probe(true, &[]).await?)
            }
        })
    }

    /// When paginating backwards, are there more items?
    async fn has_previous_page(&self) -> async_graphql::Result<bool> {
        let s = &self.spec;
        Ok(match (&self.first, s.backward) {
            (Some(_), true) if self.has_more => true,
            (Some(first), true) => match &s.after {
                Some(_) => self.probe(false, &[(first, Bound::Before)]).await?,
                None => false,
            },
            (Some(_), false) if s.offset > 0 => true,
            (Some(first), false) => match &s.after {
                Some(_) => self.probe(false, &[(first, Bound::Before)]).await?,
                None => false,
            },
            (None, backward) => {
                let before_after = match &s.after {
                    Some(a) => self.probe(false, &[(a, Bound::NotAfter)]).await?,
                    None => false,
                };
                before_after || (!backward && s.offset > 0 && self.probe(true, &[]).await?)
            }
        })
    }

    /// When paginating backwards, the cursor to continue.
    async fn start_cursor(&self) -> Option<Cursor> {
        self.first
            .as_ref()
            .map(|v| encode_cursor(&self.spec.prefix, v))
    }

    /// When paginating forwards, the cursor to continue.
    async fn end_cursor(&self) -> Option<Cursor> {
        self.last
            .as_ref()
            .map(|v| encode_cursor(&self.spec.prefix, v))
    }
}

/// Declares a PostGraphile connection type (`<Things>Connection`) and its edge type
/// (`<Things>Edge`) over a [`Node`] type.
macro_rules! connection {
    ($conn:ident, $edge:ident, $node:ty, $doc_nodes:literal) => {
        pub struct $conn(pub $crate::graphql::page::Connection<$node>);

        #[async_graphql::Object]
        impl $conn {
            #[doc = $doc_nodes]
            async fn nodes(&self) -> Vec<Option<&$node>> {
                self.0.rows().iter().map(Some).collect()
            }

            /// A list of edges which contains the node and cursor to aid in pagination.
            async fn edges(&self) -> Vec<$edge<'_>> {
                self.0
                    .rows()
                    .iter()
                    .map(|node| $edge {
                        conn: &self.0,
                        node,
                    })
                    .collect()
            }

            /// Information to aid in pagination.
            async fn page_info(&self) -> $crate::graphql::page::PageInfo {
                self.0.page_info()
            }

            /// The count of *all* the objects you could get from the connection.
            async fn total_count(&self) -> async_graphql::Result<i32> {
                Ok(self.0.total_count().await?)
            }
        }

        /// An edge in a connection.
        pub struct $edge<'a> {
            conn: &'a $crate::graphql::page::Connection<$node>,
            node: &'a $node,
        }

        #[async_graphql::Object]
        impl<'a> $edge<'a> {
            /// A cursor for use in pagination.
            async fn cursor(&self) -> Option<$crate::graphql::scalars::Cursor> {
                Some(self.conn.cursor(self.node))
            }

            /// The node at the end of the edge.
            async fn node(&self) -> Option<&$node> {
                Some(self.node)
            }
        }
    };
}
pub(crate) use connection;

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Column = Column {
        sql: "id",
        kind: Kind::Text,
        nullable: false,
    };
    const AT: Column = Column {
        sql: "at",
        kind: Kind::Time,
        nullable: true,
    };

    #[test]
    fn cursors_round_trip_and_refuse_another_ordering() {
        let order = vec![
            Term {
                col: AT,
                desc: true,
            },
            Term {
                col: ID,
                desc: false,
            },
        ];
        let prefix = vec!["at_desc".to_string()];
        let values = vec![
            Value::Time(parse_datetime("2026-10-01T09:05:00Z")),
            Value::Text(Some("c-1".into())),
        ];
        let c = encode_cursor(&prefix, &values);
        assert_eq!(decode_cursor(&c.0, &prefix, &order), Some(values.clone()));
        let nulls = vec![Value::Time(None), Value::Text(Some("c-1".into()))];
        let c2 = encode_cursor(&prefix, &nulls);
        assert_eq!(decode_cursor(&c2.0, &prefix, &order), Some(nulls));
        assert_eq!(
            decode_cursor(&c.0, &["primary_key_asc".to_string()], &order),
            None
        );
        assert_eq!(decode_cursor("garbage", &prefix, &order), None);
        // a NULL primary key is no cursor we made
        let bad = encode_cursor(&prefix, &[Value::Time(None), Value::Text(None)]);
        assert_eq!(decode_cursor(&bad.0, &prefix, &order), None);
    }

    #[test]
    fn keyset_sql_handles_nulls_and_directions() {
        let mut qb = QueryBuilder::<Postgres>::new("");
        let order = vec![
            Term {
                col: AT,
                desc: false,
            },
            Term {
                col: ID,
                desc: false,
            },
        ];
        push_beyond(
            &mut qb,
            &order,
            &[Value::Time(None), Value::Text(Some("x".into()))],
            false,
        );
        assert_eq!(qb.sql(), "((FALSE) OR (t.at IS NULL AND t.id > $1))");
        let mut qb = QueryBuilder::<Postgres>::new("");
        push_beyond(
            &mut qb,
            &order,
            &[
                Value::Time(parse_datetime("2026-01-01T00:00:00Z")),
                Value::Text(Some("x".into())),
            ],
            true,
        );
        assert_eq!(qb.sql(), "((t.at < $1) OR (t.at = $2 AND t.id < $3))");
    }

    #[test]
    fn cost_counts_children_per_row() {
        assert_eq!(cost(Some(10), None, 1000, 3), 31);
        assert_eq!(cost(None, Some(5000), 1000, 1), 1001);
        assert_eq!(cost(None, None, 10, 4), 41);
    }
}

//! `Subscription`, `SubscriptionsOrderBy`, `SubscriptionCondition` and
//! `SubscriptionsConnection`, named as PostGraphile names them for the `subscriptions` table.

use async_graphql::{Context, Enum, InputObject, MaybeUndefined, Object, Result};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};

use super::customers::Customer;
use super::error::{or_null, Internal};
use super::loaders::Loaders;
use super::page::{connection, Column, Kind, Node, OrderBy, Table, Term, Value};
use super::scalars::Datetime;
use crate::reads::{Read, ReadPool};

const fn text(sql: &'static str, nullable: bool) -> Column {
    Column {
        sql,
        kind: Kind::Text,
        nullable,
    }
}

const fn time(sql: &'static str, nullable: bool) -> Column {
    Column {
        sql,
        kind: Kind::Time,
        nullable,
    }
}

pub const SUBSCRIPTION_ID: Column = text("subscription_id", false);
pub const CUSTOMER_ID: Column = text("customer_id", false);
const STATUS: Column = text("status", true);
const PLAN_ID: Column = text("plan_id", true);
const PLAN_NAME: Column = text("plan_name", true);
const BILLING_ID: Column = text("billing_id", true);
const RESOURCE_ID: Column = text("resource_id", true);
const BILLING_PERIOD: Column = text("billing_period", true);
const START_DATE: Column = time("start_date", true);
const END_DATE: Column = time("end_date", true);
const CANCELLATION_DATE: Column = time("cancellation_date", true);
const TRIAL_END_DATE: Column = time("trial_end_date", true);
const CREATED_AT: Column = time("created_at", false);
const UPDATED_AT: Column = time("updated_at", false);

/// The select list; [`Subscription::at`] reads it by position.
pub const SELECT: &str = "t.subscription_id, t.customer_id, t.status, t.plan_id, t.plan_name, \
     t.billing_id, t.resource_id, t.billing_period, t.start_date, t.end_date, \
     t.cancellation_date, t.trial_end_date, t.created_at, t.updated_at";

pub static TABLE: Table = Table {
    name: "subscriptions",
    select: SELECT,
    // a subscription whose customer is a tombstone is never shown (none should exist)
    visible: "EXISTS (SELECT 1 FROM customers c WHERE c.customer_id = t.customer_id \
              AND NOT c.is_deleted)",
};

#[derive(Debug, Clone, FromRow)]
pub struct Subscription {
    pub subscription_id: String,
    pub customer_id: String,
    pub status: Option<String>,
    pub plan_id: Option<String>,
    pub plan_name: Option<String>,
    pub billing_id: Option<String>,
    pub resource_id: Option<String>,
    pub billing_period: Option<String>,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub cancellation_date: Option<DateTime<Utc>>,
    pub trial_end_date: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Subscription {
    /// Reads the [`SELECT`] columns starting at position `base`; `None` when they are NULL
    /// (the empty side of a LEFT JOIN).
    pub fn at(row: &PgRow, base: usize) -> sqlx::Result<Option<Subscription>> {
        let Some(subscription_id) = row.try_get::<Option<String>, _>(base)? else {
            return Ok(None);
        };
        Ok(Some(Subscription {
            subscription_id,
            customer_id: row.try_get(base + 1)?,
            status: row.try_get(base + 2)?,
            plan_id: row.try_get(base + 3)?,
            plan_name: row.try_get(base + 4)?,
            billing_id: row.try_get(base + 5)?,
            resource_id: row.try_get(base + 6)?,
            billing_period: row.try_get(base + 7)?,
            start_date: row.try_get(base + 8)?,
            end_date: row.try_get(base + 9)?,
            cancellation_date: row.try_get(base + 10)?,
            trial_end_date: row.try_get(base + 11)?,
            created_at: row.try_get(base + 12)?,
            updated_at: row.try_get(base + 13)?,
        }))
    }
}

impl Node for Subscription {
    const TABLE: &'static Table = &TABLE;

    fn value(&self, col: &Column) -> Value {
        let t = |s: &Option<String>| Value::Text(s.clone());
        match col.sql {
            "subscription_id" => Value::Text(Some(self.subscription_id.clone())),
            "customer_id" => Value::Text(Some(self.customer_id.clone())),
            "status" => t(&self.status),
            "plan_id" => t(&self.plan_id),
            "plan_name" => t(&self.plan_name),
            "billing_id" => t(&self.billing_id),
            "resource_id" => t(&self.resource_id),
            "billing_period" => t(&self.billing_period),
            "start_date" => Value::Time(self.start_date),
            "end_date" => Value::Time(self.end_date),
            "cancellation_date" => Value::Time(self.cancellation_date),
            "trial_end_date" => Value::Time(self.trial_end_date),
            "created_at" => Value::Time(Some(self.created_at)),
            _ => Value::Time(Some(self.updated_at)),
        }
    }
}

/// The subscription, when its customer is not a tombstone.
pub async fn by_id(reads: &ReadPool, id: &str) -> Result<Option<Subscription>, Internal> {
    const SQL: &str = "SELECT t.subscription_id, t.customer_id, t.status, t.plan_id, t.plan_name,
            t.billing_id, t.resource_id, t.billing_period, t.start_date, t.end_date,
            t.cancellation_date, t.trial_end_date, t.created_at, t.updated_at
         FROM subscriptions t
         WHERE t.subscription_id = $1
           AND EXISTS (SELECT 1 FROM customers c WHERE c.customer_id = t.customer_id
                       AND NOT c.is_deleted)";
    let read: Read<str, _> = |conn, id| Box::pin(sqlx::query_as(SQL).bind(id).fetch_optional(conn));
    Ok(reads.run(id, read).await?)
}

#[Object]
impl Subscription {
    async fn subscription_id(&self) -> &str {
        &self.subscription_id
    }

    async fn customer_id(&self) -> &str {
        &self.customer_id
    }

    async fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    async fn plan_id(&self) -> Option<&str> {
        self.plan_id.as_deref()
    }

    async fn plan_name(&self) -> Option<&str> {
        self.plan_name.as_deref()
    }

    async fn billing_id(&self) -> Option<&str> {
        self.billing_id.as_deref()
    }

    /// The resource the subscription is for; null for a customer-level subscription.
    async fn resource_id(&self) -> Option<&str> {
        self.resource_id.as_deref()
    }

    async fn billing_period(&self) -> Option<&str> {
        self.billing_period.as_deref()
    }

    async fn start_date(&self) -> Option<Datetime> {
        self.start_date.map(Datetime)
    }

    async fn end_date(&self) -> Option<Datetime> {
        self.end_date.map(Datetime)
    }

    async fn cancellation_date(&self) -> Option<Datetime> {
        self.cancellation_date.map(Datetime)
    }

    async fn trial_end_date(&self) -> Option<Datetime> {
        self.trial_end_date.map(Datetime)
    }

    async fn created_at(&self) -> Datetime {
        Datetime(self.created_at)
    }

    async fn updated_at(&self) -> Datetime {
        Datetime(self.updated_at)
    }

    /// Reads a single `Customer` that is related to this `Subscription`.
    async fn customer(&self, ctx: &Context<'_>) -> Option<Customer> {
        let result = Loaders::of(ctx)
            .customers()
            .load_one(self.customer_id.clone())
            .await;
        or_null(ctx, result.map_err(Into::into))
    }
}

/// Methods to use when ordering `Subscription`.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionsOrderBy {
    Natural,
    SubscriptionIdAsc,
    SubscriptionIdDesc,
    CustomerIdAsc,
    CustomerIdDesc,
    StatusAsc,
    StatusDesc,
    PlanIdAsc,
    PlanIdDesc,
    PlanNameAsc,
    PlanNameDesc,
    BillingIdAsc,
    BillingIdDesc,
    ResourceIdAsc,
    ResourceIdDesc,
    BillingPeriodAsc,
    BillingPeriodDesc,
    StartDateAsc,
    StartDateDesc,
    EndDateAsc,
    EndDateDesc,
    CancellationDateAsc,
    CancellationDateDesc,
    TrialEndDateAsc,
    TrialEndDateDesc,
    CreatedAtAsc,
    CreatedAtDesc,
    UpdatedAtAsc,
    UpdatedAtDesc,
    PrimaryKeyAsc,
    PrimaryKeyDesc,
}

impl OrderBy for SubscriptionsOrderBy {
    fn term(self) -> Option<Term> {
        use SubscriptionsOrderBy as O;
        let (col, desc) = match self {
            O::Natural => return None,
            O::SubscriptionIdAsc | O::PrimaryKeyAsc => (SUBSCRIPTION_ID, false),
            O::SubscriptionIdDesc | O::PrimaryKeyDesc => (SUBSCRIPTION_ID, true),
            O::CustomerIdAsc => (CUSTOMER_ID, false),
            O::CustomerIdDesc => (CUSTOMER_ID, true),
            O::StatusAsc => (STATUS, false),
            O::StatusDesc => (STATUS, true),
            O::PlanIdAsc => (PLAN_ID, false),
            O::PlanIdDesc => (PLAN_ID, true),
            O::PlanNameAsc => (PLAN_NAME, false),
            O::PlanNameDesc => (PLAN_NAME, true),
            O::BillingIdAsc => (BILLING_ID, false),
            O::BillingIdDesc => (BILLING_ID, true),
            O::ResourceIdAsc => (RESOURCE_ID, false),
            O::ResourceIdDesc => (RESOURCE_ID, true),
            O::BillingPeriodAsc => (BILLING_PERIOD, false),
            O::BillingPeriodDesc => (BILLING_PERIOD, true),
            O::StartDateAsc => (START_DATE, false),
            O::StartDateDesc => (START_DATE, true),
            O::EndDateAsc => (END_DATE, false),
            O::EndDateDesc => (END_DATE, true),
            O::CancellationDateAsc => (CANCELLATION_DATE, false),
            O::CancellationDateDesc => (CANCELLATION_DATE, true),
            O::TrialEndDateAsc => (TRIAL_END_DATE, false),
            O::TrialEndDateDesc => (TRIAL_END_DATE, true),
            O::CreatedAtAsc => (CREATED_AT, false),
            O::CreatedAtDesc => (CREATED_AT, true),
            O::UpdatedAtAsc => (UPDATED_AT, false),
            O::UpdatedAtDesc => (UPDATED_AT, true),
        };
        Some(Term { col, desc })
    }
}

/// A condition to be used against `Subscription` object types. All fields are tested for
/// equality and combined with a logical ‘and.’
#[derive(InputObject, Debug, Default)]
pub struct SubscriptionCondition {
    /// Checks for equality with the object’s `subscriptionId` field.
    pub subscription_id: MaybeUndefined<String>,
    /// Checks for equality with the object’s `customerId` field.
    pub customer_id: MaybeUndefined<String>,
    /// Checks for equality with the object’s `status` field.
    pub status: MaybeUndefined<String>,
    /// Checks for equality with the object’s `planId` field.
    pub plan_id: MaybeUndefined<String>,
    /// Checks for equality with the object’s `planName` field.
    pub plan_name: MaybeUndefined<String>,
    /// Checks for equality with the object’s `billingId` field.
    pub billing_id: MaybeUndefined<String>,
    /// Checks for equality with the object’s `resourceId` field.
    pub resource_id: MaybeUndefined<String>,
    /// Checks for equality with the object’s `billingPeriod` field.
    pub billing_period: MaybeUndefined<String>,
    /// Checks for equality with the object’s `startDate` field.
    pub start_date: MaybeUndefined<Datetime>,
    /// Checks for equality with the object’s `endDate` field.
    pub end_date: MaybeUndefined<Datetime>,
    /// Checks for equality with the object’s `cancellationDate` field.
    pub cancellation_date: MaybeUndefined<Datetime>,
    /// Checks for equality with the object’s `trialEndDate` field.
    pub trial_end_date: MaybeUndefined<Datetime>,
    /// Checks for equality with the object’s `createdAt` field.
    pub created_at: MaybeUndefined<Datetime>,
    /// Checks for equality with the object’s `updatedAt` field.
    pub updated_at: MaybeUndefined<Datetime>,
}

impl SubscriptionCondition {
    pub fn filter(condition: Option<&Self>) -> Vec<(Column, Value)> {
        let Some(c) = condition else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (col, v) in [
            (SUBSCRIPTION_ID, &c.subscription_id),
            (CUSTOMER_ID, &c.customer_id),
            (STATUS, &c.status),
            (PLAN_ID, &c.plan_id),
            (PLAN_NAME, &c.plan_name),
            (BILLING_ID, &c.billing_id),
            (RESOURCE_ID, &c.resource_id),
            (BILLING_PERIOD, &c.billing_period),
        ] {
            super::page::text_condition(&mut out, col, v);
        }
        for (col, v) in [
            (START_DATE, &c.start_date),
            (END_DATE, &c.end_date),
            (CANCELLATION_DATE, &c.cancellation_date),
            (TRIAL_END_DATE, &c.trial_end_date),
            (CREATED_AT, &c.created_at),
            (UPDATED_AT, &c.updated_at),
        ] {
            super::page::time_condition(&mut out, col, v);
        }
        out
    }
}

connection!(
    SubscriptionsConnection,
    SubscriptionsEdge,
    Subscription,
    "A list of `Subscription` objects."
);

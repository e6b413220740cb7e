//! `Subscription`'s fields, `SubscriptionsOrderBy`, `SubscriptionCondition` and
//! `SubscriptionsConnection`, named as PostGraphile names them for the `subscriptions` table
//! (the row and its SQL are in [`super::rows`]).

use async_graphql::{Context, Enum, InputObject, MaybeUndefined, Object};

use super::error::or_null;
use super::page::{connection, Column, Condition, OrderBy, Term, Value};
use super::rows::{Customer, Loaders, Subscription};
use super::scalars::Datetime;

pub const SUBSCRIPTION_ID: Column = Column::text("subscription_id", false);
pub const CUSTOMER_ID: Column = Column::text("customer_id", false);
const STATUS: Column = Column::text("status", true);
const PLAN_ID: Column = Column::text("plan_id", true);
const PLAN_NAME: Column = Column::text("plan_name", true);
const BILLING_ID: Column = Column::text("billing_id", true);
const RESOURCE_ID: Column = Column::text("resource_id", true);
const BILLING_PERIOD: Column = Column::text("billing_period", true);
const START_DATE: Column = Column::time("start_date", true);
const END_DATE: Column = Column::time("end_date", true);
const CANCELLATION_DATE: Column = Column::time("cancellation_date", true);
const TRIAL_END_DATE: Column = Column::time("trial_end_date", true);
const CREATED_AT: Column = Column::time("created_at", false);
const UPDATED_AT: Column = Column::time("updated_at", false);

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
    const PRIMARY_KEY: Column = SUBSCRIPTION_ID;

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

impl Condition for SubscriptionCondition {
    fn filter(&self) -> Vec<(Column, Value)> {
        let mut out = Vec::new();
        for (col, v) in [
            (SUBSCRIPTION_ID, &self.subscription_id),
            (CUSTOMER_ID, &self.customer_id),
            (STATUS, &self.status),
            (PLAN_ID, &self.plan_id),
            (PLAN_NAME, &self.plan_name),
            (BILLING_ID, &self.billing_id),
            (RESOURCE_ID, &self.resource_id),
            (BILLING_PERIOD, &self.billing_period),
        ] {
            super::page::text_condition(&mut out, col, v);
        }
        for (col, v) in [
            (START_DATE, &self.start_date),
            (END_DATE, &self.end_date),
            (CANCELLATION_DATE, &self.cancellation_date),
            (TRIAL_END_DATE, &self.trial_end_date),
            (CREATED_AT, &self.created_at),
            (UPDATED_AT, &self.updated_at),
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

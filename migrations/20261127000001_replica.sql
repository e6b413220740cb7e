-- The replica of Stigg state, with the version columns that carry STIGG-EVENTS §4.
-- `resource_key` is '' for the customer-level set and the resource id otherwise, so that
-- (customer, resource or none) is a plain primary key.

CREATE TABLE customers (
    customer_id  text PRIMARY KEY,
    name         text,
    email        text,
    billing_id   text,
    metadata     jsonb,
    raw          jsonb,
    -- time of the newest customer.* event applied; NULL for a placeholder made from an
    -- embedded customer{} (§7.4), so any customer.* event fills it in
    version      timestamptz,
    -- tombstone (§7.6): set by customer.deleted and kept after a later revival, so that any
    -- event older than the deletion stays stale
    is_deleted   boolean NOT NULL DEFAULT false,
    deleted_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_live_idx ON customers (customer_id) WHERE NOT is_deleted;

CREATE TABLE subscriptions (
    subscription_id   text PRIMARY KEY,
    customer_id       text NOT NULL REFERENCES customers (customer_id),
    status            text,
    plan_id           text,
    plan_name         text,
    billing_id        text,
    resource_id       text,
    billing_period    text,
    start_date        timestamptz,
    end_date          timestamptz,
    cancellation_date timestamptz,
    trial_end_date    timestamptz,
    addons            jsonb,
    metadata          jsonb,
    raw               jsonb NOT NULL,
    version           timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- the Node example's missing index: GraphQL nesting and the access check's
-- "has an active subscription" both look subscriptions up by customer
CREATE INDEX subscriptions_customer_idx ON subscriptions (customer_id, status);

-- One row per (customer, resource or none): the version of the whole set and the list as sent.
CREATE TABLE entitlement_sets (
    customer_id   text NOT NULL REFERENCES customers (customer_id),
    resource_key  text NOT NULL,
    version       timestamptz,
    entitlements  jsonb NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, resource_key)
);

-- One row per feature of a set; replaced with the set.
CREATE TABLE entitlements (
    customer_id       text NOT NULL,
    resource_key      text NOT NULL,
    feature_id        text NOT NULL,
    feature_type      text NOT NULL,
    meter_type        text,
    usage_limit       double precision,
    has_unlimited     boolean NOT NULL DEFAULT false,
    has_soft_limit    boolean NOT NULL DEFAULT false,
    period_anchor     timestamptz,
    period_start      timestamptz,
    period_end        timestamptz,
    reset_period      text,
    enum_values       text[],
    credit_remaining  double precision,
    PRIMARY KEY (customer_id, resource_key, feature_id),
    FOREIGN KEY (customer_id, resource_key)
        REFERENCES entitlement_sets (customer_id, resource_key) ON DELETE CASCADE
);

-- Current usage per (customer, resource or none, feature); versioned independently of the set.
CREATE TABLE usage (
    customer_id    text NOT NULL REFERENCES customers (customer_id),
    resource_key   text NOT NULL,
    feature_id     text NOT NULL,
    current_usage  double precision NOT NULL,
    version        timestamptz,
    period_start   timestamptz,
    period_end     timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, resource_key, feature_id)
);

-- Every processed event, by its deduplication key (messageId, else eventId, else body hash).
CREATE TABLE inbox (
    message_id    text PRIMARY KEY,
    event_type    text NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('applied', 'stale', 'skipped')),
    customer_id   text,
    -- kept only for events that change no state (skipped / recorded-only types), whose
    -- body is stored nowhere else
    payload       jsonb,
    processed_at  timestamptz NOT NULL DEFAULT now()
);

-- Messages that could not be applied, with why, for `dlq list` / `dlq replay`.
CREATE TABLE dead_letters (
    source_id         text PRIMARY KEY,  -- SQS message id, or ingest-<hash> for `ingest`
    event_message_id  text,
    event_type        text,
    reason            text NOT NULL,
    body              bytea NOT NULL,
    attempts          integer NOT NULL DEFAULT 1,
    first_seen        timestamptz NOT NULL DEFAULT now(),
    last_seen         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_first_seen_idx ON dead_letters (first_seen);

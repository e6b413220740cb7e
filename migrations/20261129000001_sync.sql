-- `stigg-byos sync`: one row a pass, with how far it got, so that `sync --resume` continues an
-- interrupted pass from its last completed page instead of from the start.
CREATE TABLE sync_runs (
    run_id       bigserial PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    -- customers, subscriptions, entitlements, prune, done
    phase        text NOT NULL DEFAULT 'customers',
    -- the listing cursor after the last completed page of the phase (customers, subscriptions)
    cursor       text,
    -- entitlements: the last (customer, resource key) whose state was read and merged
    after_customer  text,
    after_resource  text,
    -- running counts of the pass (the summary line)
    counts       jsonb NOT NULL DEFAULT '{}',
    -- set when the pass ended: complete, or stopped early (and why)
    finished_at  timestamptz,
    complete     boolean NOT NULL DEFAULT false,
    error        text
);

-- The customers a pass listed (with the version Stigg gave), for its prune and its
-- entitlement reads.
CREATE TABLE sync_listed (
    run_id       bigint NOT NULL REFERENCES sync_runs (run_id) ON DELETE CASCADE,
    customer_id  text NOT NULL,
    updated_at   timestamptz,
    PRIMARY KEY (run_id, customer_id)
);

-- The (customer, resource) pairs the pass's subscriptions named, whose entitlement state it
-- reads.
CREATE TABLE sync_resources (
    run_id       bigint NOT NULL REFERENCES sync_runs (run_id) ON DELETE CASCADE,
    customer_id  text NOT NULL,
    resource_id  text NOT NULL,
    PRIMARY KEY (run_id, customer_id, resource_id)
);

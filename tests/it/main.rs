//! Integration tests against the machine's PostgreSQL and LocalStack: one binary, one module
//! per area, a fresh database and queue per test.

mod apply;
mod cache;
mod console;
mod consumer;
mod faults;
mod graphql;
mod http;
mod set_based;
mod stigg_fake;
mod support;
mod sync;

// The SQS helpers, shared with the benchmark.
#[path = "../shared/sqs.rs"]
mod sqs;

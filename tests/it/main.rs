//! Integration tests against the machine's PostgreSQL and LocalStack: one binary, one module
//! per area, a fresh database and queue per test.

mod apply;
mod consumer;
mod faults;
mod graphql;
mod http;
// shared with the benchmark, which uses the rest of it
#[allow(dead_code)]
#[path = "../shared/sqs.rs"]
mod sqs;
mod stigg_fake;
mod support;
mod sync;

//! The HTTP load generator: keep-alive HTTP/1.1 over plain TCP, one request in flight per
//! connection (as wrk and oha do), latencies kept exactly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::note;

pub(super) fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

pub(super) fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub(super) struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
    body_at: usize,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Http {
    pub(super) async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(8192),
            body_at: 0,
        })
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Sends one request, reads the whole answer; returns the status.
    pub(super) async fn roundtrip(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let head_end = loop {
            self.fill().await?;
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| std::io::Error::other("head is not UTF-8"))?;
        let status: u16 = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))?;
        let mut length = None;
        let mut chunked = false;
        for line in head.split("\r\n").skip(1) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
        self.body_at = head_end;
        if chunked {
            while !self.buf.ends_with(b"0\r\n\r\n") {
                self.fill().await?;
            }
        } else {
            let want = head_end + length.unwrap_or(0);
            while self.buf.len() < want {
                self.fill().await?;
            }
        }
        Ok(status)
    }

    pub(super) fn body(&self) -> &[u8] {
        &self.buf[self.body_at..]
    }
}

pub(super) struct LoadReport {
    pub(super) requests: u64,
    io_errors: u64,
    statuses: BTreeMap<u16, u64>,
    seconds: f64,
    /// Latencies of the measured requests, microseconds, sorted.
    latencies: Vec<u32>,
}

impl LoadReport {
    pub(super) fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    pub(super) fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// In milliseconds.
    pub(super) fn percentile(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1] as f64 / 1000.0
    }

    pub(super) fn describe(&self) {
        note(format!(
            "{} requests in {:.1} s = {:.0} req/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, \
             p99.9 {:.2} ms, max {:.2} ms; statuses {:?}; connection errors {}",
            self.requests,
            self.seconds,
            self.rate(),
            self.percentile(0.5),
            self.percentile(0.9),
            self.percentile(0.99),
            self.percentile(0.999),
            self.percentile(1.0),
            self.statuses,
            self.io_errors
        ));
    }
}

pub(super) type BodyFn = Arc<dyn Fn(&mut SmallRng) -> String + Send + Sync>;

/// `connections` keep-alive connections, each sending the next request as soon as the answer
/// came (a GET when `body` gives an empty string). Requests sent during the warm-up are not counted.
pub(super) async fn load(
    addr: SocketAddr,
    path: &'static str,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    body: BodyFn,
) -> Result<LoadReport> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..connections {
        let body = body.clone();
        tasks.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(1000 + i as u64);
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 14);
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut io_errors = 0u64;
            let mut conn = None;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Http::connect(addr).await {
                        Ok(c) => conn.insert(c),
                        Err(_) => {
                            io_errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let body = body(&mut rng);
                let request = if body.is_empty() {
                    get(path)
                } else {
                    post(path, &body)
                };
                let sent = Instant::now();
                match c.roundtrip(&request).await {
                    Ok(status) => {
                        let done = Instant::now();
                        if sent >= measure_from && done <= end {
                            lat.push(
                                done.duration_since(sent).as_micros().min(u32::MAX as u128) as u32
                            );
                            *statuses.entry(status).or_default() += 1;
                        }
                    }
                    Err(_) => {
                        io_errors += 1;
                        conn = None;
                    }
                }
            }
            (lat, statuses, io_errors)
        });
    }
    let mut latencies = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut io_errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, s, e) = r?;
        latencies.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
        io_errors += e;
    }
    latencies.sort_unstable();
    Ok(LoadReport {
        requests: latencies.len() as u64,
        io_errors,
        statuses,
        seconds: duration.as_secs_f64(),
        latencies,
    })
}

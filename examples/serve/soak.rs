//! The soak run: many requests over loopback against an in-process server, every response
//! checked against a direct `Session::run`, with latency, throughput and memory measured.

use crate::client::Client;
use crate::http::{Config, Server};
use infer::{npy, Session, Tensor};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct Soak {
    /// An ONNX (or Keras) model with one input.
    pub model: PathBuf,
    /// That input, as `.npy`; float inputs are also sent scaled, so that responses swapped
    /// between concurrent requests would show.
    pub input: PathBuf,
    /// Requests measured, after the warm-up.
    pub requests: usize,
    /// Requests sent first, not measured: they grow the allocator's arenas, the shape cache
    /// and the server's buffers to their steady size.
    pub warmup: usize,
    /// Client threads, each with one keep-alive connection.
    pub clients: usize,
    /// Server settings.
    pub server: Config,
    /// Threads of the session's pool (`None`: all cores).
    pub session_threads: Option<usize>,
    /// Largest resident-memory growth allowed between the end of the warm-up and the end.
    pub max_rss_growth: u64,
}

/// What a soak measured.
#[derive(Clone, Debug)]
pub struct Report {
    pub requests: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// Resident memory after the warm-up and at the end (`None` off Linux).
    pub rss_before: Option<u64>,
    pub rss_after: Option<u64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib =
            |b: Option<u64>| b.map_or("n/a".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        write!(
            f,
            "{} requests in {:.2?}: {:.0} req/s, p50 {:.2?}, p99 {:.2?}; RSS after warm-up {}, at the end {}",
            self.requests,
            self.elapsed,
            self.requests as f64 / self.elapsed.as_secs_f64(),
            self.p50,
            self.p99,
            mib(self.rss_before),
            mib(self.rss_after),
        )
    }
}

/// Runs the soak; an error if a response is wrong or memory grew past the bound.
pub fn run(soak: &Soak) -> Result<Report, String> {
    let mut builder = Session::builder();
    if let Some(n) = soak.session_threads {
        builder = builder.threads(n);
    }
    let session = Arc::new(
        builder
            .build_from_file(&soak.model)
            .map_err(|e| e.to_string())?,
    );
    let input = npy::read_npy(&soak.input).map_err(|e| e.to_string())?;
    // Each case: the request body, and the outputs of a direct run on it.
    let cases: Vec<(Vec<u8>, Vec<Tensor>)> = variants(&input)?
        .into_iter()
        .map(|x| {
            let body = npy::to_npy_bytes(&x).map_err(|e| e.to_string())?;
            let outputs = session.run_positional(vec![x]).map_err(|e| e.to_string())?;
            let expected = outputs
                .values()
                .iter()
                .map(|v| v.as_tensor().cloned().map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?;
            Ok((body, expected))
        })
        .collect::<Result<_, String>>()?;
    let cases = Arc::new(cases);

    let server = Server::start("127.0.0.1:0", Arc::clone(&session), soak.server)
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let clients = soak.clients.max(1);
    // The clients wait here twice: after the warm-up (while memory is measured), and
    // before the measured requests start.
    let barrier = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let share = |total: usize| total / clients + usize::from(c < total % clients);
            let (warmup, measured) = (share(soak.warmup), share(soak.requests));
            let (cases, barrier, addr) = (Arc::clone(&cases), Arc::clone(&barrier), server.addr());
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let mut client = Client::connect(addr).map_err(|e| e.to_string());
                let mut send = |i: usize| -> Result<Duration, String> {
                    let client = client.as_mut().map_err(|e| e.clone())?;
                    let (body, expected) = &cases[(c + i) % cases.len()];
                    let start = Instant::now();
                    let response = client
                        .request("POST", "/predict", body)
                        .map_err(|e| format!("client {c}, request {i}: {e}"))?;
                    let took = start.elapsed();
                    check(&response.body, response.status(), expected)
                        .map_err(|e| format!("client {c}, request {i}: {e}"))?;
                    Ok(took)
                };
                // Every client reaches both barriers, even after a failure, so that the
                // others are not left waiting.
                let warm: Result<Vec<_>, _> = (0..warmup).map(&mut send).collect();
                // The latency records are written (so their pages are resident) before memory
                // is measured: the harness's own storage must not read as the server growing.
                let mut times = vec![Duration::ZERO; measured];
                barrier.wait();
                barrier.wait();
                for (i, t) in times.iter_mut().enumerate() {
                    *t = send(warmup + i)?;
                }
                warm.map(|_| times)
            })
        })
        .collect();
    // Touched before the measurement, for the same reason as the clients' records.
    let mut latencies = vec![Duration::ZERO; soak.requests];
    latencies.clear();
    barrier.wait();
    let rss_before = resident_bytes();
    let start = Instant::now();
    barrier.wait();
    for h in handles {
        latencies.extend(
            h.join()
                .map_err(|_| "a client thread panicked".to_string())??,
        );
    }
    let elapsed = start.elapsed();
    let rss_after = resident_bytes();
    // Stops the server (the clients have closed their connections).
    drop(server);

    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
        latencies.get(i).copied().unwrap_or_default()
    };
    let report = Report {
        requests: latencies.len(),
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
        rss_before,
        rss_after,
    };
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        if after > before.saturating_add(soak.max_rss_growth) {
            return Err(format!(
                "resident memory grew by {} bytes (over the {}-byte bound) after the warm-up: \
                 {report}",
                after - before,
                soak.max_rss_growth
            ));
        }
    }
    Ok(report)
}

/// The input, and for a float input three scaled copies too.
fn variants(input: &Tensor) -> Result<Vec<Tensor>, String> {
    let Ok(values) = input.as_slice::<f32>() else {
        return Ok(vec![input.clone()]);
    };
    (0..4)
        .map(|i| {
            let scale = 1.0 + 0.25 * i as f32;
            let scaled = values.iter().map(|v| v * scale).collect();
            Tensor::from_vec(input.shape().to_vec(), scaled).map_err(|e| e.to_string())
        })
        .collect()
}

/// A response must be a 200 whose body decodes to exactly the expected outputs.
fn check(body: &[u8], status: Option<u16>, expected: &[Tensor]) -> Result<(), String> {
    if status != Some(200) {
        return Err(format!(
            "status {status:?}: {}",
            String::from_utf8_lossy(body).trim_end()
        ));
    }
    let got = match expected {
        [_] => vec![npy::parse_npy(body)?],
        _ => npy::parse_npz(body)?.into_iter().map(|(_, t)| t).collect(),
    };
    let same = got.len() == expected.len() && got.iter().zip(expected).all(|(g, e)| g.bit_eq(e));
    if same {
        Ok(())
    } else {
        Err("the response differs from a direct Session::run".into())
    }
}

/// This process's resident memory (`VmRSS` of /proc/self/status), on Linux.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

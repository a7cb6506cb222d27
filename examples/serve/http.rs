//! A minimal HTTP/1.1 prediction server over one shared `Session`.
//!
//! Hand-written over `std::net` and a fixed pool of worker threads, on purpose: this is an
//! example, each request is a blocking CPU-bound `Session::run` (which already runs on the
//! session's own rayon pool), so an async runtime would add a large dependency tree and buy
//! nothing. It speaks just enough HTTP for `curl` and the soak client: `Content-Length`
//! bodies (no chunked encoding), keep-alive, one request at a time per connection.
//!
//! Routes:
//! - `GET /health` → `200 ok`;
//! - `POST /predict` with an `.npy` body (a model with one input) or an `.npz` body (entries
//!   named by the model's inputs) → the output as `.npy` (one output) or `.npz` (several,
//!   named by the model's outputs).
//!
//! Every bad request gets a 4xx with the error text; requests are bounded (header bytes,
//! body bytes, an idle timeout), so a client cannot make a worker allocate without bound or
//! hold it forever.

use infer::{npy, Error, Session, Tensor};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most bytes of a request line plus headers.
const MAX_HEAD_BYTES: usize = 16 << 10;
/// How long a connection may sit idle (or trickle a request) before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Server settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Worker threads, each serving one connection at a time.
    pub workers: usize,
    /// Largest request body accepted (a larger one gets 413 before it is read).
    pub max_body_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 4,
            max_body_bytes: 64 << 20,
        }
    }
}

/// A running server. Dropping it stops accepting, lets the workers finish their
/// connections and waits for them (a client that keeps an idle connection open delays this by
/// up to the idle timeout).
pub struct Server {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free one) and starts serving `session`.
    pub fn start(
        addr: impl ToSocketAddrs,
        session: Arc<Session>,
        config: Config,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        // A bounded hand-off: when every worker is busy and the queue is full, the acceptor
        // waits, and new connections wait in the kernel's listen backlog.
        let workers_n = config.workers.max(1);
        let (send, recv) = sync_channel::<TcpStream>(workers_n * 2);
        let recv = Arc::new(Mutex::new(recv));
        let workers = (0..workers_n)
            .map(|i| {
                let (recv, session) = (Arc::clone(&recv), Arc::clone(&session));
                std::thread::Builder::new()
                    .name(format!("serve-{i}"))
                    .spawn(move || worker(&recv, &session, config))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let stop = Arc::clone(&stopping);
        let acceptor = std::thread::Builder::new()
            .name("serve-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    // A failed accept (the peer reset, out of descriptors) drops that
                    // connection only.
                    if let Ok(stream) = stream {
                        if send.send(stream).is_err() {
                            break;
                        }
                    }
                }
                // Dropping `send` ends the workers once the queue is drained.
            })?;
        Ok(Server {
            addr,
            stopping,
            acceptor: Some(acceptor),
            workers,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        // Wake the acceptor, blocked in `accept`, with one connection of our own.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(recv: &Mutex<Receiver<TcpStream>>, session: &Session, config: Config) {
    loop {
        // Hold the lock only while waiting for the next connection.
        let next = match recv.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(stream) = next else { return };
        // An I/O error ends that connection only.
        let _ = serve_connection(stream, session, config);
    }
}

/// Serves the requests of one connection until the client closes it, asks to close it,
/// sends something unparseable, or goes idle.
fn serve_connection(stream: TcpStream, session: &Session, config: Config) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let request = match read_message(&mut reader, config.max_body_bytes) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::Bad(status, reason)) => {
                // The stream is out of sync with the message boundaries: answer, then close.
                let response = Response::text(status, &reason);
                return response.write_to(&mut writer, false);
            }
        };
        // HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 closes it unless told.
        let keep_alive = if request.start.ends_with("HTTP/1.0") {
            request.header_is("connection", "keep-alive")
        } else {
            !request.header_is("connection", "close")
        };
        let response = handle(&request, session);
        response.write_to(&mut writer, keep_alive)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

fn handle(request: &Message, session: &Session) -> Response {
    let Some((method, path)) = request.request_target() else {
        return Response::text(400, "malformed request line");
    };
    match (method, path) {
        ("GET", "/health") => Response::text(200, "ok"),
        ("POST", "/predict") => {
            // Defense in depth: no input should make a kernel panic, but if one does, this
            // request gets a 500 and the worker lives on.
            // (Unwind safety: a panic leaves the session usable; its only shared mutable
            // state, the shape cache, sits behind a mutex whose poisoning it handles.)
            std::panic::catch_unwind(AssertUnwindSafe(|| predict(&request.body, session)))
                .unwrap_or_else(|_| Response::text(500, "the model panicked on this input"))
        }
        (_, "/health" | "/predict") => Response::text(405, "method not allowed"),
        _ => Response::text(404, "no such route: GET /health, POST /predict"),
    }
}

/// Decodes the body, runs the model, encodes the outputs.
fn predict(body: &[u8], session: &Session) -> Response {
    let inputs = match decode_inputs(body, session) {
        Ok(inputs) => inputs,
        Err(reason) => return Response::text(400, &reason),
    };
    let outputs = match session.run(inputs.iter().map(|(n, t)| (n.as_str(), t.clone()))) {
        Ok(outputs) => outputs,
        // The caller's inputs do not fit the model (names, dtypes, ranks).
        Err(e @ Error::Input(_)) => return Response::text(400, &e.to_string()),
        // The model rejected the values (a shape its nodes cannot compute on, a limit).
        Err(e) => return Response::text(422, &e.to_string()),
    };
    let tensors: Vec<(&str, &Tensor)> = outputs
        .iter()
        .filter_map(|(name, v)| Some((name, v.as_tensor().ok()?)))
        .collect();
    if tensors.len() != outputs.len() {
        return Response::text(501, "the model has non-tensor outputs");
    }
    let encoded = match tensors.as_slice() {
        [(_, t)] => npy::to_npy_bytes(t),
        _ => npy::to_npz_bytes(tensors.iter().copied()),
    };
    match encoded {
        Ok(bytes) => Response::binary(bytes),
        Err(e) => Response::text(500, &e.to_string()),
    }
}

/// `(input name, tensor)` pairs from an `.npy` body (the model's single input) or an `.npz`
/// body (entries named by input).
fn decode_inputs(body: &[u8], session: &Session) -> Result<Vec<(String, Tensor)>, String> {
    if body.starts_with(b"\x93NUMPY") {
        let inputs = session.inputs();
        let [only] = inputs.as_slice() else {
            return Err(format!(
                "the model has {} inputs: send an .npz with entries {}",
                inputs.len(),
                inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let t = npy::parse_npy(body).map_err(|e| format!("body: {e}"))?;
        Ok(vec![(only.name.clone(), t)])
    } else if body.starts_with(b"PK") {
        npy::parse_npz(body).map_err(|e| format!("body: {e}"))
    } else {
        Err("the body is neither .npy nor .npz".into())
    }
}

/// Why a message could not be read.
pub enum ReadError {
    Io(std::io::Error),
    /// A malformed or oversized message: the status to answer, and why.
    Bad(u16, String),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// One HTTP message (request or response): its start line, headers and body.
pub struct Message {
    pub start: String,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn header_is(&self, name: &str, value: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(value))
    }

    /// `(method, path)` of a request line `METHOD PATH HTTP/1.x`.
    fn request_target(&self) -> Option<(&str, &str)> {
        let mut parts = self.start.split(' ');
        let (method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
        (parts.next().is_none() && version.starts_with("HTTP/1.")).then_some((method, path))
    }
}

/// Reads one message: `Ok(None)` on a clean end of stream before it starts.
pub fn read_message(
    reader: &mut impl BufRead,
    max_body: usize,
) -> Result<Option<Message>, ReadError> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        // Bound each line by what is left of the head budget.
        let budget = (MAX_HEAD_BYTES + 1).saturating_sub(before) as u64;
        reader.by_ref().take(budget).read_until(b'\n', &mut head)?;
        if head.len() == before {
            return match before {
                0 => Ok(None),
                _ => Err(ReadError::Bad(
                    400,
                    "the request ends inside its headers".into(),
                )),
            };
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err(ReadError::Bad(
                431,
                format!("request headers over {MAX_HEAD_BYTES} bytes"),
            ));
        }
        if head == b"\r\n" || head == b"\n" {
            // An empty line before the request line is tolerated (RFC 9112, 2.2).
            head.clear();
        } else if head.ends_with(b"\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
    }
    let head = String::from_utf8(head)
        .map_err(|_| ReadError::Bad(400, "the request head is not UTF-8".into()))?;
    let mut lines = head.lines();
    let start = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| ReadError::Bad(400, format!("malformed header line '{l}'")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut message = Message {
        start,
        headers,
        body: Vec::new(),
    };
    if message.header("transfer-encoding").is_some() {
        return Err(ReadError::Bad(
            501,
            "chunked bodies are not supported: send Content-Length".into(),
        ));
    }
    let len = match message.header("content-length") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| ReadError::Bad(400, format!("bad Content-Length '{v}'")))?,
    };
    if len > max_body {
        return Err(ReadError::Bad(
            413,
            format!("a body of {len} bytes is over the {max_body}-byte limit"),
        ));
    }
    message.body = vec![0; len];
    reader.read_exact(&mut message.body)?;
    Ok(Some(message))
}

/// A response about to be written.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, text: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{text}\n").into_bytes(),
        }
    }

    fn binary(body: Vec<u8>) -> Response {
        Response {
            status: 200,
            content_type: "application/octet-stream",
            body,
        }
    }

    fn write_to(&self, w: &mut impl Write, keep_alive: bool) -> std::io::Result<()> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            413 => "Content Too Large",
            422 => "Unprocessable Content",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            _ => "Internal Server Error",
        };
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        // One write for head and body: with TCP_NODELAY, two would be two packets.
        let mut out = Vec::with_capacity(head.len() + self.body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.body);
        w.write_all(&out)?;
        w.flush()
    }
}

//! The `serve` example: a short soak over loopback (every response equal to a direct run,
//! no memory growth beyond a generous bound; no timing is asserted) and the answers to bad
//! requests.

#[path = "../examples/serve/client.rs"]
mod client;
#[path = "../examples/serve/http.rs"]
mod http;
#[path = "../examples/serve/soak.rs"]
mod soak;

use infer::Session;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/example")
        .join(file)
}

#[test]
fn a_short_soak_answers_every_request_correctly_without_growing() {
    let soak = soak::Soak {
        model: example("tiny_cnn.onnx"),
        input: example("input.npy"),
        requests: 200,
        warmup: 40,
        clients: 4,
        server: http::Config {
            workers: 4,
            ..http::Config::default()
        },
        session_threads: Some(2),
        // Generous: debug builds and a shared CI machine; a leak of one response per
        // request would still be caught only over longer runs (examples/soak.rs).
        max_rss_growth: 64 << 20,
    };
    let report = soak::run(&soak).unwrap();
    assert_eq!(report.requests, 200);
    println!("{report}");
}

#[test]
fn bad_requests_get_4xx_with_the_reason() {
    let session = Session::builder()
        .threads(1)
        .build_from_file(example("tiny_cnn.onnx"))
        .unwrap();
    let config = http::Config {
        workers: 2,
        max_body_bytes: 1 << 20,
    };
    let server = http::Server::start("127.0.0.1:0", Arc::new(session), config).unwrap();
    let mut client = client::Client::connect(server.addr()).unwrap();
    let mut ask = |method: &str, path: &str, body: &[u8]| {
        let r = client.request(method, path, body).unwrap();
        (
            r.status().unwrap(),
            String::from_utf8_lossy(&r.body).into_owned(),
        )
    };

    assert_eq!(ask("GET", "/health", b""), (200, "ok\n".into()));
    assert_eq!(ask("GET", "/nope", b"").0, 404);
    assert_eq!(ask("GET", "/predict", b"").0, 405);
    let (status, text) = ask("POST", "/predict", b"hello");
    assert_eq!(status, 400);
    assert!(text.contains("neither .npy nor .npz"), "{text}");
    // A truncated .npy, and one of the wrong shape (the model checks it).
    let npy = std::fs::read(example("input.npy")).unwrap();
    let (status, text) = ask("POST", "/predict", &npy[..npy.len() / 2]);
    assert_eq!(status, 400, "{text}");
    let wrong =
        infer::npy::to_npy_bytes(&infer::Tensor::zeros(infer::DType::F32, vec![1, 2]).unwrap());
    let (status, text) = ask("POST", "/predict", &wrong.unwrap());
    assert!((400..500).contains(&status), "{status} {text}");
    // The connection is still usable after every error above.
    assert_eq!(ask("POST", "/predict", &npy).0, 200);

    drop(client);

    // Over the body limit: refused from the head alone, before the body is sent.
    let mut raw = TcpStream::connect(server.addr()).unwrap();
    raw.write_all(b"POST /predict HTTP/1.1\r\nContent-Length: 2097152\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains("over the 1048576-byte limit"), "{answer}");
    drop(server);
}

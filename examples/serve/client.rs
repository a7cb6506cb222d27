//! A keep-alive HTTP/1.1 client for the `serve` example (the soak run and the tests).

use crate::http::{read_message, Message, ReadError, IDLE_TIMEOUT};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};

/// One keep-alive connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one request and reads its response.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> std::io::Result<Message> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut out = Vec::with_capacity(head.len() + body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body);
        self.writer.write_all(&out)?;
        match read_message(&mut self.reader, usize::MAX) {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(std::io::ErrorKind::UnexpectedEof.into()),
            Err(ReadError::Io(e)) => Err(e),
            Err(ReadError::Bad(_, reason)) => Err(std::io::Error::other(reason)),
        }
    }
}

impl Message {
    /// The status code of a response line `HTTP/1.1 200 OK`.
    pub fn status(&self) -> Option<u16> {
        self.start.split(' ').nth(1)?.parse().ok()
    }
}

//! {{name}}: a Nimbus service. Any HTTP server works (axum, actix-web, ...): it must listen on
//! 127.0.0.1:$PORT. This one uses only the standard library.
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").expect("PORT is set by Nimbus");
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))?;
    for stream in listener.incoming() {
        let mut stream = stream?;
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header)? <= 2 {
                    break;
                }
            }
            let body = if target == "/healthz" {
                "ok".to_string()
            } else {
                format!("Hello from {{name}} (Rust)! path={target}\n")
            };
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        });
    }
    Ok(())
}

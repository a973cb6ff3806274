//! A Nimbus service in Rust: any HTTP server listening on 127.0.0.1:$PORT. Dependency-free to
//! keep the example small; axum or actix-web work the same way.
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").expect("PORT is set by Nimbus");
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))?;
    println!("rust service on port {port}");
    for stream in listener.incoming() {
        let mut stream = stream?;
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone()?);
            reader.read_line(&mut line)?;
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            // Skip the headers.
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header)? <= 2 {
                    break;
                }
            }
            let (ctype, body) = if path == "/healthz" {
                ("text/plain", "ok".to_string())
            } else {
                ("application/json", format!(r#"{{"language":"rust","path":"{path}","pid":{}}}"#, std::process::id()))
            };
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        });
    }
    Ok(())
}

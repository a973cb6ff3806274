//! A WASI preview1 command module run through Nimbus's WAGI (CGI) executor: reads the request from
//! CGI environment variables and stdin, writes CGI headers and a body to stdout.
use std::io::{Read, Write};

fn main() {
    let path = std::env::var("PATH_INFO").unwrap_or_default();
    let query = std::env::var("QUERY_STRING").unwrap_or_default();
    let method = std::env::var("REQUEST_METHOD").unwrap_or_default();
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).unwrap();
    eprintln!("wagi guest handling {method} {path}");
    match path.as_str() {
        "/loop" => {
            #[allow(clippy::empty_loop)]
            loop {}
        }
        "/redirect" => {
            print!("Location: /wagi/elsewhere\n\n");
        }
        "/missing" => {
            print!("Status: 404 Not Found\nContent-Type: text/plain\n\nno such thing\n");
        }
        "/garbage" => {
            print!("this is not a CGI header block");
        }
        _ => {
            let mut out = std::io::stdout().lock();
            write!(out, "Content-Type: text/plain\nX-Wagi: yes\n\n").unwrap();
            writeln!(out, "method={method} path={path} query={query}").unwrap();
            writeln!(out, "args={:?}", std::env::args().collect::<Vec<_>>()).unwrap();
            writeln!(out, "greeting={}", std::env::var("GREETING").unwrap_or_default()).unwrap();
            out.write_all(b"body=").unwrap();
            out.write_all(&body).unwrap();
            out.write_all(b"\n").unwrap();
        }
    }
}

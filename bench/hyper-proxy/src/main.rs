//! A reverse proxy with nothing but the proxying: hyper 1 HTTP/1.1 server and client on one
//! current-thread tokio runtime per core (the model Nimbus's gateway uses), writes flattened into
//! one buffer as Nimbus's are (no `writev`), keep-alive connections to the backend pooled per
//! thread, requests and responses forwarded as they are. No routing, request ids, tracing,
//! metrics, admission, `x-forwarded-*` or hop-by-hop handling: what is left is what hyper and
//! tokio cost, the floor under Nimbus's proxy in `bench/services.sh`.
//!
//! Usage: hyper-proxy LISTEN_PORT BACKEND_PORT (both on 127.0.0.1)
use std::cell::RefCell;
use std::rc::Rc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

type Pool = Rc<RefCell<Vec<SendRequest<Incoming>>>>;

fn main() {
    let args: Vec<u16> = std::env::args().skip(1).map(|a| a.parse().expect("a port")).collect();
    let [listen, backend] = args[..] else { panic!("usage: hyper-proxy LISTEN_PORT BACKEND_PORT") };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads: Vec<_> = (0..cores).map(|_| std::thread::spawn(move || serve(listen, backend))).collect();
    for t in threads {
        t.join().expect("a proxy thread");
    }
}

/// One thread: its own listener on the shared port (`SO_REUSEPORT`), runtime and pool.
fn serve(listen: u16, backend: u16) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket.set_reuseport(true).expect("SO_REUSEPORT");
        socket.bind(([127, 0, 0, 1], listen).into()).expect("the listen port");
        let listener = socket.listen(1024).expect("listen");
        let pool = Pool::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                let service = hyper::service::service_fn(move |req| forward(pool.clone(), backend, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .writev(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn forward(
    pool: Pool,
    backend: u16,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let pooled = pool.borrow_mut().pop();
    let mut sender = match pooled {
        Some(sender) if !sender.is_closed() => sender,
        _ => {
            let stream = TcpStream::connect(("127.0.0.1", backend)).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http1::Builder::new().writev(false).handshake(TokioIo::new(stream)).await?;
            tokio::task::spawn_local(conn);
            sender
        }
    };
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    // Back at once: the next request here waits in `ready()` until this response's body is read.
    pool.borrow_mut().push(sender);
    Ok(resp)
}

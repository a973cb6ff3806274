//! Reaching a sandboxed process's own network namespace from Nimbus. The namespace has only its
//! loopback interface, so nothing outside can connect to the service and the service can connect
//! to nothing outside; Nimbus (root of the host's namespaces) opens its sockets *inside* it
//! instead: the calling thread enters the namespace just long enough to create a socket, which
//! stays bound to that namespace wherever it is then used.
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use tokio::net::{TcpSocket, TcpStream};

/// A network namespace, held open by a descriptor.
#[derive(Debug)]
pub(crate) struct NetNs(OwnedFd);

impl NetNs {
    /// The namespace `pid` is in, if it is not the host's.
    pub(crate) fn of(pid: u32) -> io::Result<Option<Self>> {
        let path = format!("/proc/{pid}/ns/net");
        if std::fs::read_link(&path)? == std::fs::read_link("/proc/self/ns/net")? {
            return Ok(None);
        }
        Ok(Some(Self(File::open(path)?.into())))
    }

    /// Runs `f` with the calling thread inside this namespace. `f` must not block or yield: it
    /// creates sockets, nothing more.
    fn enter<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        static HOST: OnceLock<io::Result<OwnedFd>> = OnceLock::new();
        // The main thread's namespace, which no thread of Nimbus leaves for longer than `f`.
        let host = HOST.get_or_init(|| File::open("/proc/self/ns/net").map(OwnedFd::from));
        let host = host.as_ref().map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
        move_into_link_name_space(self.0.as_fd(), Some(LinkNameSpaceType::Network))?;
        let result = f();
        if let Err(e) = move_into_link_name_space(host.as_fd(), Some(LinkNameSpaceType::Network)) {
            // A thread of Nimbus stranded in a service's namespace would serve the wrong network.
            eprintln!("nimbus: cannot return to the host's network namespace: {e}");
            std::process::abort();
        }
        result
    }

    /// A TCP listener on `127.0.0.1:port` inside the namespace.
    pub(crate) fn listen(&self, port: u16) -> io::Result<tokio::net::TcpListener> {
        let listener = self.enter(|| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)))?;
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    }
}

/// How Nimbus connects to one process's port: on the host's loopback, or inside its namespace.
#[derive(Debug, Clone)]
pub(crate) struct Dial {
    pub(crate) port: u16,
    ns: Option<Arc<NetNs>>,
}

impl Dial {
    /// The port on the host's loopback.
    pub(crate) fn host(port: u16) -> Self {
        Self { port, ns: None }
    }

    /// The port on the loopback of `ns`.
    pub(crate) fn inside(port: u16, ns: Arc<NetNs>) -> Self {
        Self { port, ns: Some(ns) }
    }

    /// A connection to `127.0.0.1:port`.
    pub(crate) async fn connect(&self) -> io::Result<TcpStream> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Some(ns) = &self.ns else { return TcpStream::connect(addr).await };
        let fd = ns.enter(|| {
            let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
            Ok(rustix::net::socket_with(AddressFamily::INET, SocketType::STREAM, flags, None)?)
        })?;
        TcpSocket::from_std_stream(std::net::TcpStream::from(fd)).connect(addr).await
    }
}

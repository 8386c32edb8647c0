//! A TCP proxy in front of a server, for connections that die without
//! closing: [`Proxy::silence`] makes every connection open at that moment
//! stop forwarding in both directions while it stays open (no FIN, no RST),
//! as when a NAT or a cloud load balancer forgets its mapping. New
//! connections are forwarded as before.
//!
//! SIGSTOP on the server is not the same thing: resuming it revives the old
//! connection, and a silent connection never comes back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy on a free port of 127.0.0.1, running on its own thread until
/// dropped.
pub struct Proxy {
    port: u16,
    /// Bumped by [`silence`](Self::silence); a connection accepted under an
    /// older epoch stops forwarding.
    epoch: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Forwards `127.0.0.1:<port>` to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("the bound address").port();
        let (epoch, epochs) = watch::channel(0u64);
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let counter = Arc::clone(&accepted);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("a Tokio listener");
                let accept = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        counter.fetch_add(1, Ordering::SeqCst);
                        let epochs = epochs.clone();
                        tokio::spawn(forward(client, upstream, epochs));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime closes every connection.
        });
        Proxy {
            port,
            epoch,
            accepted,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Every connection open now stops forwarding, for good, and stays
    /// open; later connections are forwarded.
    pub fn silence(&self) {
        self.epoch.send_modify(|epoch| *epoch += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies both ways until either side closes, or until the epoch moves on:
/// then it holds both sockets open and never reads or writes again.
async fn forward(client: TcpStream, upstream: SocketAddr, mut epochs: watch::Receiver<u64>) {
    let born = *epochs.borrow_and_update();
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let copy = async {
        tokio::select! {
            _ = pump(&mut client_read, &mut server_write) => {}
            _ = pump(&mut server_read, &mut client_write) => {}
        }
    };
    let silenced = async {
        while *epochs.borrow_and_update() == born {
            if epochs.changed().await.is_err() {
                // The proxy is stopping.
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = copy => {}
        _ = silenced => {
            // Forward nothing, close nothing: the four halves are this
            // function's, and it never returns (until the proxy's runtime
            // is dropped).
            std::future::pending::<()>().await;
        }
    }
}

/// Copies `from` to `to` until either fails or `from` ends.
async fn pump(from: &mut (impl AsyncReadExt + Unpin), to: &mut (impl AsyncWriteExt + Unpin)) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

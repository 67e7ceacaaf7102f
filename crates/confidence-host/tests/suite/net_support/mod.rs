//! Corporate-network pieces for `tests/network.rs`, all on 127.0.0.1: a CA and a server
//! certificate generated at test time, a TLS front that terminates TLS and passes the bytes to
//! the fake Confidence, and a forward proxy that counts what goes through it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{copy_bidirectional, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The host name the TLS front's certificate is for (besides `localhost`). Only ever reached
/// through the proxy, which maps every target to loopback: no DNS lookup happens.
pub const CDN_HOST: &str = "cdn.confidence.test";

/// A private CA and a server certificate it signed for [`CDN_HOST`] and `localhost`.
pub struct TestPki {
    pub ca_pem: String,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: Vec<u8>,
}

impl TestPki {
    pub fn generate() -> TestPki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "confidence tests CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::new(vec![CDN_HOST.to_string(), "localhost".to_string()]).unwrap();
        server.distinguished_name.push(DnType::CommonName, CDN_HOST);
        let cert = server.signed_by(&key, &ca).unwrap();
        TestPki { ca_pem: ca.pem(), server_chain: vec![cert.der().clone()], server_key: key.serialize_der() }
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), key)
            .unwrap();
        Arc::new(config)
    }
}

/// Terminates TLS and pipes each connection to `upstream` (the fake Confidence, plain http).
pub struct TlsFront {
    pub addr: SocketAddr,
    pub handshakes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl TlsFront {
    pub async fn start(pki: &TestPki, upstream: SocketAddr) -> TlsFront {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(pki.server_config());
        let handshakes = Arc::new(AtomicU64::new(0));
        let counted = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    // A client that rejects our certificate ends the handshake: nothing to do.
                    let Ok(mut tls) = acceptor.accept(socket).await else { return };
                    counted.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut plain) = TcpStream::connect(upstream).await {
                        let _ = copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsFront { addr, handshakes, task }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the proxy saw.
#[derive(Debug, Default, Clone)]
pub struct ProxyLog {
    /// `CONNECT` targets, in order.
    pub tunnels: Vec<String>,
    /// Absolute-form requests forwarded (plain http through the proxy).
    pub forwarded: Vec<String>,
    /// `Proxy-Authorization` values received.
    pub authorizations: Vec<String>,
}

/// An HTTP forward proxy: `CONNECT` tunnels and absolute-form requests, every target mapped to
/// `upstream`. With `black_hole`, it accepts connections and never answers (for timeouts).
pub struct ForwardProxy {
    pub addr: SocketAddr,
    log: Arc<Mutex<ProxyLog>>,
    task: JoinHandle<()>,
}

impl ForwardProxy {
    pub async fn start(upstream: SocketAddr) -> ForwardProxy {
        Self::start_with(Some(upstream)).await
    }

    pub async fn black_hole() -> ForwardProxy {
        Self::start_with(None).await
    }

    async fn start_with(upstream: Option<SocketAddr>) -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(ProxyLog::default()));
        let shared = log.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                match upstream {
                    Some(upstream) => {
                        tokio::spawn(serve(socket, upstream, shared.clone()));
                    }
                    None => held.push(socket),
                }
            }
        });
        ForwardProxy { addr, log, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> ProxyLog {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, log: Arc<Mutex<ProxyLog>>) {
    let Some((head, rest)) = read_head(&mut client).await else { return };
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default().to_string());
    {
        let mut log = log.lock().unwrap();
        for line in lines.clone() {
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("proxy-authorization") {
                    log.authorizations.push(value.trim().to_string());
                }
            }
        }
        if method == "CONNECT" {
            log.tunnels.push(target.clone());
        } else {
            log.forwarded.push(target.clone());
        }
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    if method == "CONNECT" {
        if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
            return;
        }
    } else {
        // Absolute form to origin form; the other header lines pass as they are.
        let path = target.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_else(|| "/".into());
        let mut forwarded = request_line.replacen(&target, &path, 1).into_bytes();
        forwarded.extend_from_slice(&head[head.iter().position(|b| *b == b'\r').unwrap_or(head.len())..]);
        if server.write_all(&forwarded).await.is_err() {
            return;
        }
    }
    if server.write_all(&rest).await.is_err() {
        return;
    }
    let _ = copy_bidirectional(&mut client, &mut server).await;
}

/// The request head (through the blank line) and whatever arrived after it.
async fn read_head(socket: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((buf, rest));
        }
        if buf.len() > 16 * 1024 {
            return None;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

//! A tunnel admits only the Database it was opened for. Its listener is a loopback port that
//! any connection the operator makes could reach: a Database in another namespace naming
//! `127.0.0.1:PORT`, or a host name that resolves to loopback (at the moment the ZooKeeper
//! client resolves it, which no check made earlier can pin down). So the port proves nothing,
//! and every connection must first show the tunnel's key: 256 random bits, made when the
//! tunnel's Database is first routed and handed, in memory, to that Database's connection
//! settings and to nothing else.
//!
//! A ZooKeeper client shows it as its first auth packet (scheme digest, user
//! [`USER`]), which zookeeper-client writes right behind the ConnectRequest. The tunnel checks
//! it before it dials anything, keeps it from the remote server, and answers it after the
//! server's ConnectResponse as the server would (same xid, zxid 0, no error). Our own probes
//! that speak no ZooKeeper (`srvr`) send [`probe_preamble`] first instead.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use verifier::DigestAuth;

/// The digest user a tunnel key travels as.
pub const USER: &str = "resiliency-tunnel";
/// How long a new connection may take to show the key: a ZooKeeper client sends it at once.
pub const ADMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest ConnectRequest or auth packet taken before the key is checked. Both are tens of
/// bytes; nothing larger is buffered for a connection that has not shown the key.
const MAX_HANDSHAKE_FRAME: usize = 1024;
/// Starts a probe's preamble. As a ZooKeeper frame length it would be negative, so no
/// ZooKeeper client ever starts with it.
const PROBE_MAGIC: [u8; 4] = [0xff, b'T', b'U', b'N'];
/// ZooKeeper's `auth` opcode.
const OP_AUTH: i32 = 100;

/// A fresh key for the tunnels of one Database.
pub fn new_key() -> std::io::Result<DigestAuth> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(DigestAuth {
        user: USER.to_string(),
        password: bytes.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// The bytes a connection must show: the digest auth's `user:password`.
pub(super) fn key_bytes(key: &DigestAuth) -> Vec<u8> {
    format!("{}:{}", key.user, key.password).into_bytes()
}

/// What a probe that speaks no ZooKeeper sends through a tunnel before its own bytes.
pub fn probe_preamble(key: &DigestAuth) -> Vec<u8> {
    let key = key_bytes(key);
    let mut out = PROBE_MAGIC.to_vec();
    out.extend_from_slice(&frame_len(key.len()));
    out.extend_from_slice(&key);
    out
}

fn frame_len(n: usize) -> [u8; 4] {
    i32::try_from(n).unwrap_or(i32::MAX).to_be_bytes()
}

/// A connection that showed the key.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admitted {
    /// A ZooKeeper session: its ConnectRequest (framed) goes to the server; the key's auth
    /// packet, with this xid, is answered by the tunnel.
    Session { connect: Vec<u8>, auth_xid: i32 },
    /// A probe: the bytes that follow go through as they are.
    Raw,
}

/// Why a connection was turned away before anything was dialled.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refused {
    #[error("it did not show the tunnel's key within {}s", ADMIT_TIMEOUT.as_secs())]
    Timeout,
    #[error("it closed before showing the tunnel's key")]
    Closed,
    #[error("it does not start as a ZooKeeper client does")]
    NotZooKeeper,
    #[error("its first packet after the ConnectRequest is not the tunnel's key")]
    NoKey,
    #[error("it showed a wrong key")]
    WrongKey,
}

/// Reads a connection's first bytes and admits it if they show `key` (see the module docs).
/// Reads exactly the handshake, so what follows is still in the socket to be relayed.
pub(super) async fn admit<R>(local: &mut R, key: &[u8]) -> Result<Admitted, Refused>
where
    R: AsyncRead + Unpin,
{
    tokio::time::timeout(ADMIT_TIMEOUT, handshake(local, key))
        .await
        .unwrap_or(Err(Refused::Timeout))
}

async fn handshake<R: AsyncRead + Unpin>(r: &mut R, key: &[u8]) -> Result<Admitted, Refused> {
    let head = read_array(r).await?;
    if head == PROBE_MAGIC {
        let len = read_array(r).await?;
        let shown = read_body(r, len).await?;
        return if same(&shown, key) {
            Ok(Admitted::Raw)
        } else {
            Err(Refused::WrongKey)
        };
    }
    let body = read_body(r, head).await?;
    let mut connect = head.to_vec();
    connect.extend_from_slice(&body);
    let len = read_array(r).await?;
    let auth = read_body(r, len).await?;
    let (auth_xid, scheme, shown) = parse_auth(&auth).ok_or(Refused::NoKey)?;
    if scheme != b"digest" {
        return Err(Refused::NoKey);
    }
    if !same(shown, key) {
        return Err(Refused::WrongKey);
    }
    Ok(Admitted::Session { connect, auth_xid })
}

async fn read_array<R: AsyncRead + Unpin>(r: &mut R) -> Result<[u8; 4], Refused> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).await.map_err(|_| Refused::Closed)?;
    Ok(b)
}

/// The body of a frame whose length prefix is `len`, if it is one a handshake can have.
async fn read_body<R: AsyncRead + Unpin>(r: &mut R, len: [u8; 4]) -> Result<Vec<u8>, Refused> {
    let n = usize::try_from(i32::from_be_bytes(len))
        .ok()
        .filter(|n| (1..=MAX_HANDSHAKE_FRAME).contains(n))
        .ok_or(Refused::NotZooKeeper)?;
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).await.map_err(|_| Refused::Closed)?;
    Ok(body)
}

/// An auth request: header (xid, opcode 100), then type, scheme and auth (jute: big-endian
/// i32s, strings and buffers prefixed by their i32 length). Its xid, scheme and auth bytes.
fn parse_auth(b: &[u8]) -> Option<(i32, &[u8], &[u8])> {
    let int = |at: usize| -> Option<i32> {
        Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let bytes = |at: usize| -> Option<(&[u8], usize)> {
        let n = usize::try_from(int(at)?).ok()?;
        Some((b.get(at + 4..at + 4 + n)?, at + 4 + n))
    };
    let xid = int(0)?;
    if int(4)? != OP_AUTH {
        return None;
    }
    let (scheme, next) = bytes(12)?;
    let (auth, end) = bytes(next)?;
    (end == b.len()).then_some((xid, scheme, auth))
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The server's answer to an auth packet: a reply header (xid, zxid 0, err 0), framed.
fn auth_ok(xid: i32) -> Vec<u8> {
    let mut out = frame_len(16).to_vec();
    out.extend_from_slice(&xid.to_be_bytes());
    out.extend_from_slice(&0i64.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out
}

/// Relays an admitted connection to `remote`, the key kept out of it: for a session, its
/// ConnectRequest first, then the server's ConnectResponse followed by the tunnel's answer to
/// the key. Each way ends when its reader does, and closes its writer then.
pub(super) async fn relay<L, R>(local: L, remote: R, admitted: Admitted) -> std::io::Result<()>
where
    L: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + AsyncWrite + Unpin,
{
    let (mut lr, mut lw) = tokio::io::split(local);
    let (mut rr, mut rw) = tokio::io::split(remote);
    let (connect, auth_xid) = match admitted {
        Admitted::Session { connect, auth_xid } => (Some(connect), Some(auth_xid)),
        Admitted::Raw => (None, None),
    };
    let up = async {
        if let Some(connect) = &connect {
            rw.write_all(connect).await?;
        }
        tokio::io::copy(&mut lr, &mut rw).await?;
        rw.shutdown().await
    };
    let down = async {
        if let Some(xid) = auth_xid {
            let len = read_len(&mut rr).await?;
            let mut response = vec![0u8; len];
            rr.read_exact(&mut response).await?;
            lw.write_all(&frame_len(len)).await?;
            lw.write_all(&response).await?;
            lw.write_all(&auth_ok(xid)).await?;
        }
        tokio::io::copy(&mut rr, &mut lw).await?;
        lw.shutdown().await
    };
    tokio::try_join!(up, down).map(|_| ())
}

/// The length of the server's next frame (a ConnectResponse is a few dozen bytes).
async fn read_len<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<usize> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).await?;
    usize::try_from(i32::from_be_bytes(b))
        .ok()
        .filter(|n| (1..=MAX_HANDSHAKE_FRAME).contains(n))
        .ok_or_else(|| std::io::Error::other("the server's ConnectResponse has a bad length"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A ConnectRequest and the auth packets zookeeper-client writes behind it.
    fn client_hello(auths: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let connect = [0u8; 45];
        out.extend_from_slice(&frame_len(connect.len()));
        out.extend_from_slice(&connect);
        for (xid, (scheme, auth)) in auths.iter().enumerate() {
            let mut body = Vec::new();
            body.extend_from_slice(&(xid as i32 + 1).to_be_bytes());
            body.extend_from_slice(&OP_AUTH.to_be_bytes());
            body.extend_from_slice(&0i32.to_be_bytes());
            body.extend_from_slice(&frame_len(scheme.len()));
            body.extend_from_slice(scheme.as_bytes());
            body.extend_from_slice(&frame_len(auth.len()));
            body.extend_from_slice(auth);
            out.extend_from_slice(&frame_len(body.len()));
            out.extend_from_slice(&body);
        }
        out
    }

    async fn admit_bytes(bytes: &[u8], key: &[u8]) -> (Result<Admitted, Refused>, Vec<u8>) {
        let mut r = bytes;
        let got = admit(&mut r, key).await;
        (got, r.to_vec())
    }

    #[tokio::test]
    async fn only_the_key_as_first_auth_packet_admits_a_session() {
        let key = key_bytes(&new_key().unwrap());
        let hello = client_hello(&[("digest", &key), ("digest", b"admin:pw")]);
        let (got, rest) = admit_bytes(&hello, &key).await;
        let Ok(Admitted::Session { connect, auth_xid }) = got else {
            panic!("{got:?}");
        };
        assert_eq!((connect, auth_xid), (hello[..49].to_vec(), 1));
        // The Database's own credentials follow, untouched, for the server.
        let through_key = client_hello(&[("digest", &key)]).len();
        assert_eq!(rest, hello[through_key..]);

        let other = key_bytes(&new_key().unwrap());
        let cases: [(Vec<u8>, Refused); 5] = [
            // Another Database's connection: its own credentials first, or another key.
            (client_hello(&[("digest", b"admin:pw")]), Refused::WrongKey),
            (client_hello(&[("digest", &other)]), Refused::WrongKey),
            (client_hello(&[("sasl", &key)]), Refused::NoKey),
            // A client with no credentials at all, and a four-letter word.
            (client_hello(&[]), Refused::Closed),
            (b"srvr".to_vec(), Refused::NotZooKeeper),
        ];
        for (bytes, why) in cases {
            assert_eq!(admit_bytes(&bytes, &key).await.0, Err(why));
        }
    }

    #[tokio::test]
    async fn a_probe_shows_the_key_in_its_preamble() {
        let k = new_key().unwrap();
        let mut bytes = probe_preamble(&k);
        bytes.extend_from_slice(b"srvr");
        let (got, rest) = admit_bytes(&bytes, &key_bytes(&k)).await;
        assert_eq!((got, rest.as_slice()), (Ok(Admitted::Raw), &b"srvr"[..]));
        let other = probe_preamble(&new_key().unwrap());
        assert_eq!(
            admit_bytes(&other, &key_bytes(&k)).await.0,
            Err(Refused::WrongKey)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_dropped_after_the_timeout() {
        let (mut near, _far) = tokio::io::duplex(64);
        let got = admit(&mut near, b"k").await;
        assert_eq!(got, Err(Refused::Timeout));
    }

    #[tokio::test]
    async fn the_server_never_sees_the_key_and_the_client_gets_its_answer() {
        let key = key_bytes(&new_key().unwrap());
        let hello = client_hello(&[("digest", &key), ("digest", b"admin:pw")]);
        let (mut client, tunnel_side) = tokio::io::duplex(4096);
        let (remote_side, mut server) = tokio::io::duplex(4096);
        client.write_all(&hello).await.unwrap();
        let mut tunnel_side = tunnel_side;
        let admitted = admit(&mut tunnel_side, &key).await.unwrap();
        let relay = tokio::spawn(relay(tunnel_side, remote_side, admitted));
        // The server gets the ConnectRequest and the Database's own auth packet only.
        let through_key = client_hello(&[("digest", &key)]).len();
        let want = [&hello[..49], &hello[through_key..]].concat();
        let mut got = vec![0u8; want.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, want);
        // It answers the ConnectRequest; the client reads that, then the key's answer.
        let response = [7u8; 36];
        server.write_all(&frame_len(36)).await.unwrap();
        server.write_all(&response).await.unwrap();
        server.write_all(b"next").await.unwrap();
        let mut back = vec![0u8; 4 + 36 + 20 + 4];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back[4..40], &response);
        assert_eq!(back[40..60], auth_ok(1)[..]);
        assert_eq!(&back[60..], b"next");
        drop(client);
        drop(server);
        let _ = relay.await.unwrap();
    }
}

//! A UDP socket on the tokio reactor that is woken for reading only.
//!
//! tokio's `UdpSocket` registers for writability as well, and on Linux every datagram a socket
//! sends raises a writability edge. A server that answers each input would then wake a second
//! time per input for nothing: one more `epoll_wait`, and a CPU kept busy while the peer it has
//! just woken may be waiting for one. Here a send goes straight to the non-blocking socket.
//! Only a full send buffer (rare for UDP) waits for writability, on a registration made for
//! that wait alone.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A non-blocking UDP socket registered with the current tokio runtime for reading.
pub struct Udp {
    fd: AsyncFd<UdpSocket>,
}

/// Registers `sock` for `interest`. Must run inside a tokio runtime.
#[allow(unsafe_code)]
fn register(sock: UdpSocket, interest: Interest) -> io::Result<AsyncFd<UdpSocket>> {
    sock.set_nonblocking(true)?;
    // SAFETY: `sock` owns its descriptor, and the `AsyncFd` owns `sock`: the descriptor stays
    // open, and is the one `as_raw_fd` returns, for as long as it is registered.
    unsafe { AsyncFd::register_with_interest(sock, interest) }.map_err(io::Error::from)
}

impl Udp {
    /// Wraps a bound socket (made non-blocking here). Must run inside a tokio runtime.
    pub fn new(sock: UdpSocket) -> io::Result<Udp> {
        Ok(Udp { fd: register(sock, Interest::READABLE)? })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }

    /// Waits for the next datagram.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.fd.async_io(Interest::READABLE, |s| s.recv_from(buf)).await
    }

    /// The next datagram if one is queued, else `WouldBlock` (which makes the next
    /// [`Udp::recv_from`] wait for a new arrival rather than ask the socket again).
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.fd.try_io(Interest::READABLE, |s| s.recv_from(buf))
    }

    /// Sends one datagram, waiting for room only if the send buffer is full.
    pub async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        loop {
            match self.fd.get_ref().send_to(buf, to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let w = register(self.fd.get_ref().try_clone()?, Interest::WRITABLE)?;
                    w.writable().await?.retain_ready();
                }
                r => return r,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair() -> (Udp, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        (Udp::new(rx).expect("register"), tx)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_datagram_after_the_socket_ran_dry_wakes_the_receiver() {
        let (rx, tx) = pair();
        let to = rx.local_addr().expect("addr");
        let mut buf = [0u8; 64];
        tx.send_to(b"one", to).expect("send");
        tx.send_to(b"two", to).expect("send");
        let bound = Duration::from_secs(5);
        let (n, _) = tokio::time::timeout(bound, rx.recv_from(&mut buf)).await.expect("first arrives").expect("recv");
        assert_eq!(&buf[..n], b"one");
        let (n, _) = rx.try_recv_from(&mut buf).expect("second is queued");
        assert_eq!(&buf[..n], b"two");
        assert_eq!(rx.try_recv_from(&mut buf).map_err(|e| e.kind()).err(), Some(io::ErrorKind::WouldBlock));
        // The socket ran dry and its readiness was cleared: the next datagram must still wake us.
        tx.send_to(b"three", to).expect("send");
        let (n, _) = tokio::time::timeout(bound, rx.recv_from(&mut buf)).await.expect("third wakes the receiver").expect("recv");
        assert_eq!(&buf[..n], b"three");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sends_leave_from_the_bound_address() {
        let (a, b) = pair();
        let baddr = b.local_addr().expect("addr");
        assert_eq!(a.send_to(b"hi", baddr).await.expect("send"), 2);
        let mut buf = [0u8; 8];
        b.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let (n, from) = b.recv_from(&mut buf).expect("arrives");
        assert_eq!((&buf[..n], from), (&b"hi"[..], a.local_addr().expect("addr")));
    }
}

//! Read buffering below TLS, switched on once the handshake is done.
//!
//! rustls asks the socket for one record (or 4 KiB) at a time, so a bulk transfer costs a
//! system call per 16 KiB record. Reading through a buffer takes whatever the socket holds, up
//! to [`CAPACITY`], in one call; rustls then takes its records from memory. Measured on the
//! unicast bulk benchmark: socket reads fell from about 37 700 to 13 900 for 512 MiB.
//!
//! The buffer is held only while it gathers something: it is allocated when a read straight
//! into rustls's space filled all of it (the socket may well hold more), and released again
//! after a read into it found no more than rustls asked for (the socket held little: a
//! request, a ping, the last of a burst), so that an idle connection holds none. No buffer
//! exists before [`ReadBuffer::enable`] either (after a successful handshake), so a connection
//! stalled in (or failing) its handshake costs none. Measured with `benches/conn_memory.rs`:
//! 64 KiB of heap per idle connection end before this, none after.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures::{AsyncRead, AsyncWrite};

/// Bytes read from the socket at most per call while buffering.
pub const CAPACITY: usize = 64 * 1024;

/// A socket whose reads may go through a buffer once [`enable`](Self::enable)d (see the
/// [module docs](self)); writes pass through.
#[derive(Debug)]
pub struct ReadBuffer<S> {
    inner: S,
    enabled: bool,
    /// Empty while reads go straight to the caller.
    buf: Vec<u8>,
    /// `buf[pos..filled]` is read from the socket and not yet handed out.
    pos: usize,
    filled: usize,
}

impl<S> ReadBuffer<S> {
    /// Wraps `inner`, unbuffered.
    pub fn new(inner: S) -> Self {
        ReadBuffer {
            inner,
            enabled: false,
            buf: Vec::new(),
            pos: 0,
            filled: 0,
        }
    }

    /// Buffers reads from now on, while the socket holds more than the caller asks for.
    pub fn enable(&mut self) {
        self.enabled = true;
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes of buffer held now (0 while reads go straight to the caller).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadBuffer<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pos == this.filled {
            // Nothing buffered: read large requests (and everything while no buffer is held)
            // directly.
            if out.len() >= this.buf.len() {
                let n = ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
                if this.enabled && this.buf.is_empty() && n > 0 && n == out.len() {
                    // The socket had at least what was asked for: gather the next reads.
                    this.buf = vec![0; CAPACITY];
                }
                return Poll::Ready(Ok(n));
            }
            let n = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut this.buf))?;
            if n <= out.len() {
                // No more than was asked for: the buffer gathered nothing, and the socket is
                // quiet. Hand it over and go back to direct reads, holding no buffer.
                out[..n].copy_from_slice(&this.buf[..n]);
                this.buf = Vec::new();
                this.pos = 0;
                this.filled = 0;
                return Poll::Ready(Ok(n));
            }
            this.pos = 0;
            this.filled = n;
        }
        let n = out.len().min(this.filled - this.pos);
        out[..n].copy_from_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadBuffer<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt as _, executor::block_on, io::Cursor};

    use super::*;

    /// A reader that counts its reads.
    struct Counting {
        data: Cursor<Vec<u8>>,
        reads: usize,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.reads += 1;
            Pin::new(&mut self.data).poll_read(cx, buf)
        }
    }

    #[test]
    fn reads_are_direct_until_enabled_then_gathered() {
        block_on(async {
            let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            let mut r = ReadBuffer::new(Counting {
                data: Cursor::new(data.clone()),
                reads: 0,
            });
            let mut got = vec![0u8; 1000];
            r.read_exact(&mut got).await.unwrap();
            assert_eq!(r.get_ref().reads, 1);
            assert_eq!(r.capacity(), 0, "no buffer before the handshake is done");
            r.enable();
            // 4 KiB reads (as rustls makes) now cost one socket read per 64 KiB.
            let mut chunk = [0u8; 4096];
            let mut rest = Vec::new();
            loop {
                let n = r.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                rest.extend_from_slice(&chunk[..n]);
            }
            got.extend_from_slice(&rest);
            assert_eq!(got, data);
            let reads = r.get_ref().reads;
            assert!(reads <= 2 + 199_000 / CAPACITY + 2, "{reads} socket reads");
            assert_eq!(
                r.capacity(),
                0,
                "the buffer is released once the socket is drained"
            );
        });
    }

    /// A reader that hands out its chunks one per read, as a socket hands out what has
    /// arrived.
    struct Arrivals(Vec<Vec<u8>>);

    impl AsyncRead for Arrivals {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let Some(chunk) = self.0.first_mut() else {
                return Poll::Ready(Ok(0));
            };
            let n = buf.len().min(chunk.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.0.remove(0);
            }
            Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn the_buffer_is_held_only_while_the_socket_holds_more_than_asked_for() {
        block_on(async {
            let mut r = ReadBuffer::new(Arrivals(vec![
                vec![1; 100],
                vec![2; 30_000],
                vec![3; 40],
                vec![4; 100],
            ]));
            r.enable();
            let mut chunk = [0u8; 4096];
            // A small arrival: read directly, no buffer.
            assert_eq!(r.read(&mut chunk).await.unwrap(), 100);
            assert_eq!(r.capacity(), 0);
            // A burst: the direct read fills the request, so the next reads are gathered.
            assert_eq!(r.read(&mut chunk).await.unwrap(), 4096);
            assert_eq!(r.capacity(), CAPACITY);
            let mut burst = 4096;
            while burst < 30_000 {
                let n = r.read(&mut chunk).await.unwrap();
                assert!(chunk[..n].iter().all(|&b| b == 2));
                burst += n;
            }
            assert_eq!(burst, 30_000);
            // Quiet again: a read that gathers no more than asked for releases the buffer.
            assert_eq!(r.read(&mut chunk).await.unwrap(), 40);
            assert!(chunk[..40].iter().all(|&b| b == 3));
            assert_eq!(r.capacity(), 0);
            assert_eq!(r.read(&mut chunk).await.unwrap(), 100);
            assert!(chunk[..100].iter().all(|&b| b == 4));
            assert_eq!(r.capacity(), 0);
        });
    }
}

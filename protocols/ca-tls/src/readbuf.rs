//! Read buffering below TLS, switched on once the handshake is done.
//!
//! rustls asks the socket for one record (or 4 KiB) at a time, so a bulk transfer costs a
//! system call per 16 KiB record. Reading through a buffer takes whatever the socket holds, up
//! to [`CAPACITY`], in one call; rustls then takes its records from memory. Measured on the
//! unicast bulk benchmark: socket reads fell from about 37 700 to 13 900 for 512 MiB.
//!
//! The buffer is allocated only by [`ReadBuffer::enable`], after a successful handshake, so a
//! connection stalled in (or failing) its handshake costs no buffer.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures::{AsyncRead, AsyncWrite};

/// Bytes read from the socket at most per call once enabled.
pub const CAPACITY: usize = 64 * 1024;

/// A socket whose reads go through a buffer once [`enable`](Self::enable)d; writes pass through.
#[derive(Debug)]
pub struct ReadBuffer<S> {
    inner: S,
    /// Empty until enabled.
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
            buf: Vec::new(),
            pos: 0,
            filled: 0,
        }
    }

    /// Buffers reads from now on.
    pub fn enable(&mut self) {
        if self.buf.is_empty() {
            self.buf = vec![0; CAPACITY];
        }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
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
            // Nothing buffered: read large requests (and everything before `enable`) directly.
            if out.len() >= this.buf.len() {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let n = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut this.buf))?;
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
            assert!(r.buf.is_empty(), "no buffer before the handshake is done");
            let mut got = vec![0u8; 1000];
            r.read_exact(&mut got).await.unwrap();
            assert_eq!(r.get_ref().reads, 1);
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
            assert!(reads <= 1 + 199_000 / CAPACITY + 2, "{reads} socket reads");
        });
    }
}

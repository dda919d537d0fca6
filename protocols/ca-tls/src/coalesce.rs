//! Write coalescing above TLS, after the handshake.
//!
//! yamux writes each frame's 12-byte header and its body with separate `poll_write`s and
//! flushes after every frame; under TLS each write becomes a record of its own and a socket
//! write of its own. Buffering writes until the muxer flushes turns a frame into one record and
//! one system call. A large write (a frame's body) is not copied into the buffer: it goes to TLS
//! right away in one vectored write after what is held (the header), which TLS seals into the
//! same records. It sits above TLS and is installed only once the handshake (and the verdict
//! byte) are done, so handshake alerts are never held back.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures::{AsyncRead, AsyncWrite};

/// Small writes are held until a flush, or until this many bytes are held.
const CAPACITY: usize = 64 * 1024;

/// Writes of at least this many bytes are not copied: they go to TLS at once, after what is
/// held, in one vectored write (a yamux frame's body after its header).
const WRITE_THROUGH: usize = 4 * 1024;

/// A stream whose small writes are gathered until the next flush (or until a buffer's worth).
#[derive(Debug)]
pub struct Coalesced<S> {
    inner: S,
    buf: Vec<u8>,
    /// How much of `buf` has been written to `inner`.
    written: usize,
}

impl<S> Coalesced<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Coalesced {
            inner,
            buf: Vec::new(),
            written: 0,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes out what is buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        if self.buf.capacity() > CAPACITY {
            self.buf.shrink_to(CAPACITY);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes what is buffered and then `data` in vectored writes (so that TLS puts them in the
    /// same records without `data` being copied here); returns how much of `data` went.
    fn poll_write_with_buffered(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let held = &self.buf[self.written..];
            if held.is_empty() {
                self.buf.clear();
                self.written = 0;
                return Pin::new(&mut self.inner).poll_write(cx, data);
            }
            let bufs = [io::IoSlice::new(held), io::IoSlice::new(data)];
            let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n <= held.len() {
                self.written += n;
                continue;
            }
            let of_data = n - held.len();
            self.buf.clear();
            self.written = 0;
            return Poll::Ready(Ok(of_data));
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if data.len() >= WRITE_THROUGH {
            return this.poll_write_with_buffered(cx, data);
        }
        if this.buf.len() + data.len() > CAPACITY {
            ready!(this.poll_drain(cx))?;
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncWriteExt as _, executor::block_on};

    use super::*;

    /// A sink recording each write it receives.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            // Take at most 5 bytes at a time, to exercise partial writes.
            let n = data.len().min(5);
            self.0.push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A sink that takes everything, recording each (vectored) write as one entry.
    #[derive(Default)]
    struct Vectored(Vec<Vec<u8>>);

    impl AsyncWrite for Vectored {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len();
            self.0.push(all);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_large_write_goes_out_with_the_held_header_in_one_write() {
        block_on(async {
            let mut s = Coalesced::new(Vectored::default());
            let body = vec![9u8; WRITE_THROUGH];
            s.write_all(b"header").await.unwrap();
            s.write_all(&body).await.unwrap();
            assert_eq!(s.get_ref().0.len(), 1, "one write for header and body");
            assert_eq!(&s.get_ref().0[0][..6], b"header");
            assert_eq!(&s.get_ref().0[0][6..], &body[..]);
            // Nothing held: the next large write goes alone; small ones wait for the flush.
            s.write_all(&body).await.unwrap();
            s.write_all(b"tail").await.unwrap();
            assert_eq!(s.get_ref().0.len(), 2);
            s.flush().await.unwrap();
            assert_eq!(s.get_ref().0.len(), 3);
            assert_eq!(s.get_ref().0[2], b"tail");
        });
    }

    #[test]
    fn small_writes_wait_for_the_flush_and_arrive_in_order() {
        block_on(async {
            let mut s = Coalesced::new(Writes::default());
            s.write_all(b"head").await.unwrap();
            s.write_all(b"body").await.unwrap();
            assert!(s.get_ref().0.is_empty(), "nothing before the flush");
            s.flush().await.unwrap();
            assert_eq!(s.get_ref().0.concat(), b"headbody");
            let big = vec![7u8; CAPACITY + 3];
            s.write_all(b"x").await.unwrap();
            s.write_all(&big).await.unwrap();
            s.close().await.unwrap();
            let all = s.get_ref().0.concat();
            assert_eq!(&all[..9], b"headbodyx");
            assert_eq!(&all[9..], &big[..]);
        });
    }
}

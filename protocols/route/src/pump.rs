//! A relay's copy of one circuit's bytes both ways, under the budget of the peer the circuit
//! came from.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{AsyncRead, AsyncWrite, FutureExt};
use futures_timer::Delay;

/// Bytes copied per read, each way.
const CHUNK: usize = 16 * 1024;

/// A circuit that carried no byte either way for this long is cut. The ends of a routed
/// connection ping every few seconds, so only a circuit nobody uses (or a member holding one
/// open) gets there.
pub const IDLE: Duration = Duration::from_secs(120);

/// Most bytes one poll copies before it lets the other tasks of the connection run.
const PER_POLL: u64 = 256 * 1024;

/// A token bucket of bytes per second, shared by the circuits of one peer.
#[derive(Debug)]
pub struct Bucket {
    /// Bytes per second; 0: no limit.
    rate: u64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket of `rate` bytes per second (one second's worth); 0: no limit.
    pub fn new(rate: u64) -> Self {
        Bucket {
            rate,
            tokens: rate as f64,
            at: Instant::now(),
        }
    }

    /// How many of `want` bytes may go now (at least 1 when any may), or how long to wait.
    fn take(&mut self, want: usize) -> Result<usize, Duration> {
        if self.rate == 0 {
            return Ok(want);
        }
        let now = Instant::now();
        let rate = self.rate as f64;
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(rate);
        self.at = now;
        if self.tokens < 1.0 {
            let wait = (1.0 - self.tokens) / rate;
            return Err(Duration::from_secs_f64(wait.clamp(0.001, 1.0)));
        }
        let n = (self.tokens as usize).min(want).max(1);
        self.tokens -= n as f64;
        Ok(n)
    }
}

/// One direction of the copy.
struct Half {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The source ended: close the sink once the buffer is written.
    eof: bool,
    /// The sink is closed: this direction is done.
    done: bool,
    wait: Option<Delay>,
    /// Bytes moved since the pump last looked (for its idle check).
    active: bool,
}

impl Half {
    fn new() -> Self {
        Half {
            buf: vec![0u8; CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            done: false,
            wait: None,
            active: false,
        }
    }

    /// Moves bytes from `from` to `to` until either blocks; Ready(Err) ends the circuit.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut from: Pin<&mut R>,
        mut to: Pin<&mut W>,
        bucket: &Mutex<Bucket>,
        counted: &AtomicU64,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        let mut moved = 0u64;
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if moved >= PER_POLL {
                // Fair to the connection's other circuits and streams: continue next poll.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.start < self.end {
                let n =
                    futures::ready!(to.as_mut().poll_write(cx, &self.buf[self.start..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
                continue;
            }
            if self.eof {
                futures::ready!(to.as_mut().poll_close(cx))?;
                self.done = true;
                continue;
            }
            // Empty: flush what was written before waiting for more.
            if let Some(wait) = &mut self.wait {
                futures::ready!(wait.poll_unpin(cx));
                self.wait = None;
            }
            let allowed = {
                let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
                b.take(self.buf.len())
            };
            let allowed = match allowed {
                Ok(n) => n,
                Err(wait) => {
                    futures::ready!(to.as_mut().poll_flush(cx))?;
                    self.wait = Some(Delay::new(wait));
                    continue;
                }
            };
            match from.as_mut().poll_read(cx, &mut self.buf[..allowed]) {
                Poll::Ready(Ok(0)) => {
                    self.eof = true;
                    self.give_back(bucket, allowed);
                }
                Poll::Ready(Ok(n)) => {
                    self.start = 0;
                    self.end = n;
                    moved += n as u64;
                    self.active = true;
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                    self.give_back(bucket, allowed - n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.give_back(bucket, allowed);
                    futures::ready!(to.as_mut().poll_flush(cx))?;
                    return Poll::Pending;
                }
            }
        }
    }

    fn give_back(&self, bucket: &Mutex<Bucket>, n: usize) {
        if n > 0 {
            let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
            if b.rate > 0 {
                b.tokens = (b.tokens + n as f64).min(b.rate as f64);
            }
        }
    }
}

/// Copies both ways between `a` and `b` until both directions end (Ok) or one fails (Err);
/// counts the bytes into `counted` and takes them from `bucket`.
pub struct Pump<A, B> {
    a: A,
    b: B,
    a_to_b: Half,
    b_to_a: Half,
    bucket: Arc<Mutex<Bucket>>,
    counted: Arc<AtomicU64>,
    /// Fires every [`IDLE`]: a circuit that moved nothing since the last firing is cut.
    idle: Delay,
}

impl<A, B> Pump<A, B> {
    /// A pump between `a` and `b`.
    pub fn new(a: A, b: B, bucket: Arc<Mutex<Bucket>>, counted: Arc<AtomicU64>) -> Self {
        Pump {
            a,
            b,
            a_to_b: Half::new(),
            b_to_a: Half::new(),
            bucket,
            counted,
            idle: Delay::new(IDLE),
        }
    }
}

impl<A, B> Future for Pump<A, B>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let forward = this.a_to_b.poll_copy(
            cx,
            Pin::new(&mut this.a),
            Pin::new(&mut this.b),
            &this.bucket,
            &this.counted,
        )?;
        let back = this.b_to_a.poll_copy(
            cx,
            Pin::new(&mut this.b),
            Pin::new(&mut this.a),
            &this.bucket,
            &this.counted,
        )?;
        if forward.is_ready() && back.is_ready() {
            return Poll::Ready(Ok(()));
        }
        while this.idle.poll_unpin(cx).is_ready() {
            let active =
                std::mem::take(&mut this.a_to_b.active) | std::mem::take(&mut this.b_to_a.active);
            if !active {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no byte either way for the idle limit",
                )));
            }
            this.idle = Delay::new(IDLE);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bucket gives at most its rate per second, in pieces as small as one byte, and says
    /// how long to wait when it is empty; rate 0 is no limit.
    #[test]
    fn buckets_give_their_rate_and_say_how_long_to_wait() {
        let mut b = Bucket::new(1000);
        assert_eq!(b.take(600), Ok(600));
        assert_eq!(b.take(600), Ok(400));
        let wait = b.take(10).unwrap_err();
        assert!(wait <= Duration::from_millis(5), "{wait:?}");
        std::thread::sleep(Duration::from_millis(20));
        let n = b.take(1000).unwrap();
        assert!((15..=1000).contains(&n), "{n}");
        let mut free = Bucket::new(0);
        assert_eq!(free.take(usize::MAX), Ok(usize::MAX));
    }
}

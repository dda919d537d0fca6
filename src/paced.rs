//! Keeps the network path's queue short: unicast paces a connection's modules (exempt ones
//! aside) while the connection's path shows a standing queue.
//!
//! Unicast's priority classes decide what goes into the socket next, and `TCP_NOTSENT_LOWAT`
//! keeps the socket's unsent bytes few, so inside the node a consensus message waits behind
//! little. On a link slower than the node, TCP still fills the queue at the slowest hop (a
//! router's or a shaper's buffer: often 50 ms or more), and the unsent bytes of a slow
//! connection are many milliseconds too; every message of every class waits in both, each
//! way. Like LEDBAT (RFC 6817), a [`Paced`] stream (the transport wraps every TCP socket in
//! one) watches the queuing delay its socket sees: the kernel's smoothed round trip less the
//! smallest it has measured (`TCP_INFO`), the least of it over [`WINDOW`] (a standing queue,
//! as CoDel judges one, not a burst passing). Above
//! [`Traffic::queue_delay_target_ms`](crate::config::Traffic) it sets the connection's
//! [`PathPace`] to the rate the path delivers, then lowers it while the queue stands (by
//! [`DECREASE`], in proportion to the excess) and raises it while it does not (by a share of
//! the node's peak rate, the same step for every connection, so that connections sharing a
//! hop converge to fair shares), so that it finds more room when the path has it ([`Control`]).
//! Unicast keeps that rate the way it keeps an operator's limit:
//! what waits, waits in its queues, where the classes take their turns (an exempt consensus
//! module goes at once), and not in the socket or the path, where they cannot.
//!
//! A queue that does not drain while the connection yields is not of its making (other
//! traffic on the path, or a longer route): after [`GIVE_UP`] of it the connection stops
//! pacing for [`HOLD_OFF`], so that it never starves behind traffic it cannot influence, and
//! sends as plain TCP does. Linux only (`TCP_INFO`); elsewhere, and with a target of 0,
//! nothing is paced.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{AsyncRead, AsyncWrite};

use crate::bandwidth::{PathPace, PathPaces};

/// The queuing delay target [`crate::config::Traffic`] starts with.
pub const DEFAULT_QUEUE_DELAY_TARGET: Duration = Duration::from_millis(5);
/// The queue judged is the least queuing delay measured over this long: a delay that
/// passes within it (jitter, a burst) is not a standing queue.
pub const WINDOW: Duration = Duration::from_millis(100);
/// The shortest time between two samples of the socket's round trip and delivery.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(10);
/// While the queue is above the target by the target or more: the share of the rate taken
/// off per second (proportionally when less): 5 % per 10 ms sample.
pub const DECREASE: f64 = 5.0;
/// While the queue is at most the target: the share of the node's peak delivery rate (the
/// highest of its connections') added per second. The same step for every connection,
/// added, not multiplied, so that connections sharing a bottleneck converge to equal shares
/// (AIMD); and it does not shrink near the target, so that the rate keeps moving around it
/// (a rate that settled would keep whatever share it had).
pub const INCREASE: f64 = 0.1;
/// The weight of one sample in the delivery rate's moving average (about 50 ms).
pub const SMOOTH: f64 = 0.2;
/// How long a peak delivery rate takes to halve when nothing reaches it again.
pub const PEAK_HALF_LIFE: f64 = 60.0;
/// The rate never runs further ahead of the peak delivery rate than this.
pub const HEADROOM: f64 = 1.5;
/// Pacing never goes below this many bytes per second.
pub const MIN_RATE: f64 = 128.0 * 1024.0;
/// A queue above the target this long while pacing cut its rate to a quarter is not the
/// connection's doing.
pub const GIVE_UP: Duration = Duration::from_secs(2);
/// How long a stream that gave up sends without pacing before it watches the queue again.
pub const HOLD_OFF: Duration = Duration::from_secs(30);

/// One reading of the socket: when, its smoothed and smallest round trips, and the bytes the
/// peer has acknowledged so far.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was read.
    pub at: Instant,
    /// The smoothed round trip.
    pub rtt: Duration,
    /// The smallest round trip measured.
    pub min_rtt: Duration,
    /// Bytes the peer acknowledged since the connection opened.
    pub bytes_acked: u64,
    /// Data was streaming: at least [`BUSY_SEGMENTS`] segments unacknowledged. Only then is
    /// the round trip the path's: a peer that has nothing to send back delays its
    /// acknowledgements (up to the next message of a request-response exchange), and the
    /// kernel counts that delay in.
    pub busy: bool,
}

/// Segments in flight from which a [`Sample`] counts as [`Sample::busy`].
pub const BUSY_SEGMENTS: u32 = 4;

/// The pacing decision, from [`Sample`]s: pure, so that it can be tested without a path.
///
/// Starts pacing at the rate the path delivers when the queuing delay exceeds the target;
/// then, per second, takes [`DECREASE`] of the rate off while the queue is above the target,
/// in proportion to how far the delay is above it (relative to it, at most 1), and adds
/// [`INCREASE`] of the node's peak delivery rate while it is not; never beyond
/// [`HEADROOM`] times the connection's own peak nor below [`MIN_RATE`].
#[derive(Debug, Clone)]
pub struct Control {
    target: Duration,
    /// The acknowledged rate (bytes/s), a moving average.
    delivered: f64,
    /// The highest `delivered`, decaying ([`PEAK_HALF_LIFE`]).
    peak: Peak,
    /// The pacing rate; `None`: not pacing.
    rate: Option<f64>,
    last: Option<(Instant, u64)>,
    /// The queuing delays of the samples within the last [`WINDOW`].
    recent: VecDeque<(Instant, Duration)>,
    /// Since when the queue has stayed above the target while pacing, and the rate then.
    above: Option<(Instant, f64)>,
    /// No pacing before this (after giving up).
    hold_off_until: Option<Instant>,
}

impl Control {
    /// A controller keeping the queuing delay under `target`.
    pub fn new(target: Duration) -> Self {
        Control {
            target,
            delivered: 0.0,
            peak: Peak::default(),
            rate: None,
            last: None,
            recent: VecDeque::new(),
            above: None,
            hold_off_until: None,
        }
    }

    /// The pacing rate in bytes per second; `None`: send freely.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// `rate` raised for `secs` without a queue (by [`INCREASE`] of the node's peak), within
    /// the bounds.
    fn raised(&self, rate: f64, node_peak: f64, secs: f64) -> f64 {
        (rate + INCREASE * node_peak.max(self.peak.value) * secs)
            .min(self.peak.value * HEADROOM)
            .max(MIN_RATE)
    }

    /// The standing queue: the least queuing delay over the last [`WINDOW`] with `queue`
    /// measured at `at` (as CoDel judges a queue: what stays, not what passes).
    fn standing(&mut self, at: Instant, queue: Duration) -> Duration {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.push_back((at, queue));
        self.recent.iter().map(|(_, q)| *q).min().unwrap_or(queue)
    }

    /// The connection's peak delivery rate, bytes per second.
    pub fn peak(&self) -> f64 {
        self.peak.value
    }

    /// Takes a reading; `node_peak`: the highest peak delivery rate of the node's connections
    /// (the step by which rates rise).
    pub fn sample(&mut self, s: Sample, node_peak: f64) {
        let Some((at, acked)) = self.last.replace((s.at, s.bytes_acked)) else {
            return;
        };
        let secs = s.at.saturating_duration_since(at).as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let acked = s.bytes_acked.saturating_sub(acked) as f64 / secs;
        // A step of the rate counts at most 100 ms, however long since the last sample.
        let step = secs.min(0.1);
        if self.delivered == 0.0 {
            self.delivered = acked;
        } else {
            self.delivered += SMOOTH * (acked - self.delivered);
        }
        self.peak.update(self.delivered, s.at);
        if self.hold_off_until.is_some_and(|t| s.at < t) {
            return;
        }
        self.hold_off_until = None;
        if !s.busy {
            // Nothing to judge a queue by; a paced connection with little in flight has room.
            if let Some(rate) = self.rate {
                self.rate = Some(self.raised(rate, node_peak, step));
            }
            return;
        }
        let queue = self.standing(s.at, s.rtt.saturating_sub(s.min_rtt));
        let Some(rate) = self.rate else {
            if queue > self.target && self.delivered > 0.0 {
                tracing::debug!(?queue, rate = self.delivered, "queue on the path: pacing");
                self.rate = Some(self.delivered.max(MIN_RATE));
            }
            return;
        };
        if queue <= self.target {
            self.above = None;
            self.rate = Some(self.raised(rate, node_peak, step));
            return;
        }
        let over = ((queue.as_secs_f64() - self.target.as_secs_f64()) / self.target.as_secs_f64())
            .min(1.0);
        let next = (rate * (1.0 - DECREASE * over * step)).max(MIN_RATE);
        let (since, then) = *self.above.get_or_insert((s.at, rate));
        if s.at.saturating_duration_since(since) >= GIVE_UP && next <= (then / 4.0).max(MIN_RATE) {
            tracing::debug!(
                ?queue,
                "the path's queue stays without our traffic: not pacing"
            );
            self.rate = None;
            self.above = None;
            self.hold_off_until = Some(s.at + HOLD_OFF);
            return;
        }
        self.rate = Some(next);
    }
}

/// A peak rate that halves every [`PEAK_HALF_LIFE`] when nothing reaches it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peak {
    value: f64,
    at: Option<Instant>,
}

impl Peak {
    /// Raises the peak to `rate` if higher, after decaying it to `now`; returns it.
    fn update(&mut self, rate: f64, now: Instant) -> f64 {
        if let Some(at) = self.at {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            self.value *= 0.5f64.powf(secs / PEAK_HALF_LIFE);
        }
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
        self.value = self.value.max(rate);
        self.value
    }
}

/// The kernel's congestion control [`Pacing`] sets on a node connection's socket unless told
/// otherwise ([`Pacing::with_congestion`]).
///
/// The pacing here is delay-based and sits on TCP: it needs TCP under it to send what it is
/// given as fast as the path takes it. BBR (the default of some kernels) paces in the kernel
/// by its own model of the path, which reads a connection that unicast paces (sending less
/// than the path could take) as a slower path, and every 10 s drops to 4 segments in flight for
/// 200 ms to measure the round trip: the unsent bytes under `TCP_NOTSENT_LOWAT` (block data)
/// then leave at a few MB/s, and a consensus message written after them waits 50–150 ms. On
/// the netns scenario's 100 Mbit/s links, consensus p99 was 52–64 ms under BBR and 20.5 ms
/// under CUBIC, which also moved more block data (9.8 vs 8.4–9.2 MB/s per host). CUBIC is
/// built into Linux and open to every process; it is the default congestion control of most
/// distributions.
pub const DEFAULT_TCP_CONGESTION: &str = "cubic";

/// What a swarm's TCP connections are paced by: the queuing delay target, the kernel's
/// congestion control under it, and where each socket's [`PathPace`] waits for unicast
/// ([`crate::unicast::Behaviour::set_path_paces`]).
#[derive(Debug, Clone)]
pub struct Pacing {
    target: Duration,
    /// The congestion control set on each socket (`TCP_CONGESTION`); `None`: the system's.
    congestion: Option<Arc<str>>,
    /// A socket refused `congestion` (it has been logged once).
    congestion_refused: Arc<std::sync::atomic::AtomicBool>,
    paces: Arc<PathPaces>,
    /// The highest peak delivery rate of the swarm's connections.
    peak: Arc<Mutex<Peak>>,
}

impl Pacing {
    /// Connections keep the path's queuing delay under `target` (zero: never paced).
    /// The kernel's own congestion control is left as the system has it
    /// ([`Pacing::with_congestion`] sets one).
    pub fn new(target: Duration) -> Self {
        Pacing {
            target,
            congestion: None,
            congestion_refused: Arc::default(),
            paces: Arc::default(),
            peak: Arc::default(),
        }
    }

    /// Sockets get the kernel's congestion control `name` (Linux `TCP_CONGESTION`, e.g.
    /// [`DEFAULT_TCP_CONGESTION`]); empty: the system's default. A socket that refuses it (the
    /// kernel lacks it, or does not let unprivileged processes choose it) keeps the system's,
    /// and the first refusal is logged as a warning. Elsewhere than Linux: nothing is set.
    pub fn with_congestion(mut self, name: &str) -> Self {
        self.congestion = (!name.is_empty()).then(|| Arc::from(name));
        self
    }

    /// Sets the congestion control on `stream`'s socket, if one is chosen.
    fn set_congestion(&self, stream: &libp2p::tcp::tokio::TcpStream) {
        let Some(name) = &self.congestion else {
            return;
        };
        #[cfg(target_os = "linux")]
        if let Err(e) = socket2::SockRef::from(&stream.0).set_tcp_congestion(name.as_bytes()) {
            use std::sync::atomic::Ordering;
            if !self.congestion_refused.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    congestion = %name,
                    error = %e,
                    "[traffic] tcp_congestion refused: connections keep the system's congestion control"
                );
            } else {
                tracing::debug!(congestion = %name, error = %e, "TCP_CONGESTION not set");
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (stream, name);
    }

    /// The paces of the swarm's connections, for [`crate::unicast::Behaviour::set_path_paces`].
    pub fn paces(&self) -> Arc<PathPaces> {
        self.paces.clone()
    }

    /// `stream`, watched: its congestion control set ([`Pacing::with_congestion`]), its pace
    /// registered under the peer's address, with the round trip its connection took (for the
    /// muxer's windows, `build_swarm_muxed`), paced if the target is not zero.
    pub fn watch(
        &self,
        stream: libp2p::tcp::tokio::TcpStream,
    ) -> Paced<libp2p::tcp::tokio::TcpStream> {
        self.set_congestion(&stream);
        #[cfg(target_os = "linux")]
        let fd = Some(std::os::fd::AsRawFd::as_raw_fd(&stream.0));
        #[cfg(not(target_os = "linux"))]
        let fd = None;
        let pace = stream
            .0
            .peer_addr()
            .ok()
            .map(|remote| self.paces.register(remote));
        #[cfg(target_os = "linux")]
        if let (Some(fd), Some(pace)) = (fd, &pace) {
            // The handshake's round trip, before anything queues.
            if let Some(sample) = tcp_info::read(fd, Instant::now()) {
                pace.set_base_rtt(sample.min_rtt);
            }
        }
        Paced::new(
            stream,
            fd,
            self.target,
            pace,
            self.peak.clone(),
            self.paces.clone(),
        )
    }
}

/// A byte stream (a node connection's TCP stream) that reads its socket's round trips while
/// it writes, and sets the connection's [`PathPace`] by a [`Control`].
pub struct Paced<S> {
    inner: S,
    /// The socket read for samples (a file descriptor); `None`: no pacing.
    fd: Option<i32>,
    control: Option<Control>,
    pace: Option<Arc<PathPace>>,
    node_peak: Arc<Mutex<Peak>>,
    /// Where the node counts its paced connections.
    paces: Arc<PathPaces>,
    sampled: Option<Instant>,
}

impl<S> std::fmt::Debug for Paced<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paced")
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

impl<S> Paced<S> {
    /// `inner` on the socket `fd` (`None`: not a socket), holding `pace` and setting it to
    /// keep the queuing delay under `target` (zero, or no pace: never paced).
    fn new(
        inner: S,
        fd: Option<i32>,
        target: Duration,
        pace: Option<Arc<PathPace>>,
        node_peak: Arc<Mutex<Peak>>,
        paces: Arc<PathPaces>,
    ) -> Self {
        let on = fd.is_some() && pace.is_some() && !target.is_zero();
        Paced {
            inner,
            fd: fd.filter(|_| on),
            control: on.then(|| Control::new(target)),
            // Kept whether paced or not: while the socket lives, the transport and unicast
            // find its pace (and base round trip).
            pace,
            node_peak,
            paces,
            sampled: None,
        }
    }

    /// Reads the socket into the controller when a sample is due.
    fn sample(&mut self) {
        if self.control.is_none() {
            return;
        }
        let now = Instant::now();
        if self
            .sampled
            .is_some_and(|t| now.saturating_duration_since(t) < SAMPLE_INTERVAL)
        {
            return;
        }
        self.sampled = Some(now);
        #[cfg(target_os = "linux")]
        if let Some(sample) = self.fd.and_then(|fd| tcp_info::read(fd, now)) {
            self.apply(sample);
        }
    }

    /// Takes `sample` into the controller and passes the rate on to the connection's pace
    /// (and the node's count of paced connections).
    fn apply(&mut self, sample: Sample) {
        let (Some(control), Some(pace)) = (self.control.as_mut(), self.pace.as_ref()) else {
            return;
        };
        let node_peak = self
            .node_peak
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(control.peak(), sample.at);
        let was = control.rate().is_some();
        control.sample(sample, node_peak);
        pace.set_rate(control.rate());
        if control.rate().is_some() != was {
            self.paces.count(!was);
        }
    }
}

impl<S> Drop for Paced<S> {
    fn drop(&mut self) {
        if self.control.as_ref().is_some_and(|c| c.rate().is_some()) {
            self.paces.count(false);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Paced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Paced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.sample();
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.sample();
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// Linux's `TCP_INFO`, the part of it read here.
#[cfg(target_os = "linux")]
mod tcp_info {
    use std::time::{Duration, Instant};

    use super::Sample;

    /// The socket's round trips and acknowledged bytes, when the kernel reports all of them.
    pub(super) fn read(fd: i32, at: Instant) -> Option<Sample> {
        // SAFETY: `tcp_info` is a plain `repr(C)` struct of integers, valid when zeroed.
        #[allow(unsafe_code)]
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: `info` is that struct and `len` its size: the kernel writes at most `len`
        // bytes into it and sets `len` to what it wrote (less on kernels that know fewer
        // fields, which the check below catches).
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        // tcpi_min_rtt came last, in Linux 4.6.
        let needed = std::mem::offset_of!(libc::tcp_info, tcpi_min_rtt) + 4;
        if rc != 0 || (len as usize) < needed {
            return None;
        }
        // An unmeasured minimum reads as 0 or u32::MAX.
        if info.tcpi_min_rtt == 0 || info.tcpi_min_rtt == u32::MAX || info.tcpi_rtt == 0 {
            return None;
        }
        Some(Sample {
            at,
            rtt: Duration::from_micros(info.tcpi_rtt.into()),
            min_rtt: Duration::from_micros(info.tcpi_min_rtt.into()),
            bytes_acked: info.tcpi_bytes_acked,
            busy: info.tcpi_unacked >= super::BUSY_SEGMENTS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `control` a sample `ms` after `t0` with a queue of `queue_ms` and `acked` bytes
    /// so far; the node's peak is the connection's own.
    fn feed(control: &mut Control, t0: Instant, ms: u64, queue_ms: u64, acked: u64) {
        let peak = control.peak();
        feed_peak(control, t0, ms, queue_ms, acked, peak);
    }

    fn feed_peak(c: &mut Control, t0: Instant, ms: u64, queue_ms: u64, acked: u64, peak: f64) {
        c.sample(
            Sample {
                at: t0 + MS * ms as u32,
                rtt: MS * (2 + queue_ms) as u32,
                min_rtt: 2 * MS,
                bytes_acked: acked,
                busy: true,
            },
            peak,
        );
    }

    /// Runs `control` for `samples` samples 10 ms apart from `*t` on a path of `link` bytes/s
    /// (acknowledged: the pacing rate or the link, whichever is less; the link without
    /// pacing) whose queue is `queue(rate)` ms; returns the rates.
    fn run(
        c: &mut Control,
        t0: Instant,
        t: &mut u64,
        acked: &mut u64,
        samples: usize,
        link: f64,
        queue: impl Fn(Option<f64>) -> u64,
    ) -> Vec<Option<f64>> {
        let mut out = Vec::new();
        for _ in 0..samples {
            let rate = c.rate();
            *acked += (rate.unwrap_or(f64::MAX).min(link) * 0.01) as u64;
            *t += 10;
            feed(c, t0, *t, queue(rate), *acked);
            out.push(c.rate());
        }
        out
    }

    #[test]
    fn no_queue_no_pacing() {
        let (mut c, t0) = (Control::new(10 * MS), Instant::now());
        let (mut t, mut acked) = (0, 0);
        let rates = run(&mut c, t0, &mut t, &mut acked, 200, 12.5e6, |_| 3);
        assert!(rates.iter().all(Option::is_none));
    }

    /// Sparse request-response traffic: the peer delays its acknowledgements until it next
    /// sends, and the kernel's round trip grows by that; with little in flight that is no
    /// queue.
    #[test]
    fn delayed_acknowledgements_of_sparse_traffic_are_no_queue() {
        let (mut c, t0) = (Control::new(5 * MS), Instant::now());
        for i in 0..200u64 {
            c.sample(
                Sample {
                    at: t0 + MS * (i * 10) as u32,
                    rtt: 6 * MS,
                    min_rtt: Duration::from_micros(20),
                    bytes_acked: i * 2048,
                    busy: false,
                },
                0.0,
            );
        }
        assert_eq!(c.rate(), None);
    }

    #[test]
    fn the_node_counts_the_connections_that_pace() {
        let pacing = Pacing::new(10 * MS);
        let connection = |port: u16| {
            let pace = pacing
                .paces
                .register(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            // Never read: samples are applied by hand.
            Paced::new(
                (),
                Some(-1),
                10 * MS,
                Some(pace),
                pacing.peak.clone(),
                pacing.paces.clone(),
            )
        };
        let t0 = Instant::now();
        // Busy samples 10 ms apart, 12.5 MB/s acknowledged, behind a 40 ms queue.
        let sample = |i: u32| Sample {
            at: t0 + 10 * MS * i,
            rtt: 42 * MS,
            min_rtt: 2 * MS,
            bytes_acked: 125_000 * u64::from(i),
            busy: true,
        };
        let counts = || (pacing.paces.started(), pacing.paces.pacing_now());
        let mut a = connection(1);
        a.apply(sample(0));
        assert_eq!(counts(), (0, 0), "one sample is no rate yet");
        a.apply(sample(1));
        assert_eq!(counts(), (1, 1), "the queue starts pacing");
        // The queue stays whatever the rate: the connection gives up, and is no longer paced.
        let mut i = 2;
        while a.control.as_ref().is_some_and(|c| c.rate().is_some()) && i < 1000 {
            a.apply(sample(i));
            i += 1;
        }
        assert!(i < 1000, "gave up");
        assert_eq!(counts(), (1, 0));
        // A connection that closes while pacing is counted out too.
        let mut b = connection(2);
        b.apply(sample(0));
        b.apply(sample(1));
        assert_eq!(counts(), (2, 1));
        drop(b);
        assert_eq!(counts(), (2, 0));
        drop(a);
        assert_eq!(
            counts(),
            (2, 0),
            "a connection not pacing is not counted out again"
        );
    }

    #[test]
    fn a_queue_starts_pacing_and_the_rate_settles_where_the_queue_meets_the_target() {
        let (mut c, t0) = (Control::new(10 * MS), Instant::now());
        let (mut t, mut acked) = (0, 0);
        // A 12.5 MB/s link whose queue grows with how far the rate is above 11 MB/s (and is
        // 40 ms without pacing).
        let queue = |rate: Option<f64>| match rate {
            None => 40,
            Some(r) => ((r - 11e6).max(0.0) / 1e5) as u64,
        };
        let rates = run(&mut c, t0, &mut t, &mut acked, 300, 12.5e6, queue);
        assert!(
            rates[0].is_none() && rates[1].is_some(),
            "paces from the queue on"
        );
        let last = rates.last().unwrap().unwrap();
        // The queue of the rate it settles on is about the target (10 ms: 12 MB/s).
        assert!((11.5e6..=12.5e6).contains(&last), "{last}");
    }

    #[test]
    fn the_rate_falls_while_the_queue_stays_and_never_below_the_floor() {
        let (mut c, t0) = (Control::new(10 * MS), Instant::now());
        let (mut t, mut acked) = (0, 0);
        let rates = run(&mut c, t0, &mut t, &mut acked, 100, 12.5e6, |_| 30);
        let first = rates[1].unwrap();
        let last = rates.last().unwrap().unwrap();
        assert!(last < first / 2.0, "{last} vs {first}");
        assert!(rates.iter().flatten().all(|r| *r >= MIN_RATE));
        // A near-idle path: the floor.
        let mut c = Control::new(10 * MS);
        feed(&mut c, t0, 0, 40, 0);
        feed(&mut c, t0, 10, 40, 10);
        assert_eq!(c.rate(), Some(MIN_RATE));
    }

    #[test]
    fn a_queue_that_does_not_drain_is_left_alone_for_a_while() {
        let (mut c, t0) = (Control::new(10 * MS), Instant::now());
        let (mut t, mut acked) = (0, 0);
        let rates = run(&mut c, t0, &mut t, &mut acked, 400, 12.5e6, |_| 60);
        assert!(rates[1].is_some());
        assert_eq!(*rates.last().unwrap(), None, "gave up");
        let gave_up = rates.iter().rposition(Option::is_some).unwrap();
        assert!(gave_up as u64 * 10 >= GIVE_UP.as_millis() as u64);
        // During the hold-off, a queue does not bring pacing back; after it, it does.
        let held = HOLD_OFF.as_millis() as usize / 10 - (rates.len() - gave_up);
        let rates = run(&mut c, t0, &mut t, &mut acked, held, 12.5e6, |_| 60);
        assert!(rates.iter().all(Option::is_none));
        let rates = run(&mut c, t0, &mut t, &mut acked, 5, 12.5e6, |_| 60);
        assert!(rates.iter().any(Option::is_some));
    }

    #[test]
    fn a_slowed_connection_recovers_once_the_queue_clears_and_stays_within_reach_of_its_peak() {
        let (mut c, t0) = (Control::new(10 * MS), Instant::now());
        let (mut t, mut acked) = (0, 0);
        // A queue for a second (another connection's, say): the rate falls.
        let rates = run(&mut c, t0, &mut t, &mut acked, 100, 12.5e6, |_| 30);
        let low = rates.last().unwrap().unwrap();
        assert!(low < 2e6, "{low}");
        // Then none: within six seconds it is back above half the link, and never beyond
        // 1.5 times the peak delivered.
        let rates = run(&mut c, t0, &mut t, &mut acked, 600, 12.5e6, |_| 0);
        let back = rates.last().unwrap().unwrap();
        assert!(back > 6.25e6, "{back}");
        assert!(rates.iter().flatten().all(|r| *r <= 1.5 * 12.5e6 * 1.01));
    }

    /// Two connections on one bottleneck, one far behind the other: rising by the same steps
    /// (the node's peak) and falling in proportion brings them together.
    #[test]
    fn connections_sharing_a_bottleneck_converge() {
        let t0 = Instant::now();
        let (mut a, mut b) = (Control::new(10 * MS), Control::new(10 * MS));
        let (mut acked_a, mut acked_b) = (0u64, 0u64);
        // Both engaged: a at 10 MB/s, b at the floor; both have seen 6 MB/s.
        for (c, acked) in [(&mut a, &mut acked_a), (&mut b, &mut acked_b)] {
            for i in 0..50 {
                *acked += 60_000;
                feed(c, t0, i * 10, 40, *acked);
            }
        }
        a.rate = Some(10e6);
        b.rate = Some(MIN_RATE);
        // A 12.5 MB/s link: queue in proportion to how far the sum is above 12 MB/s.
        let mut t = 500;
        for _ in 0..3000 {
            let (ra, rb) = (a.rate.unwrap_or(12.5e6), b.rate.unwrap_or(12.5e6));
            let share = (12.5e6 / (ra + rb)).min(1.0);
            acked_a += (ra * share * 0.01) as u64;
            acked_b += (rb * share * 0.01) as u64;
            let queue = ((ra + rb - 12e6).max(0.0) / 1e5) as u64;
            t += 10;
            let node = a.peak().max(b.peak());
            feed_peak(&mut a, t0, t, queue, acked_a, node);
            feed_peak(&mut b, t0, t, queue, acked_b, node);
        }
        let (ra, rb) = (a.rate.unwrap(), b.rate.unwrap());
        assert!(rb > ra * 0.5 && ra > rb * 0.5, "{ra} vs {rb}");
    }

    /// A watched stream registers its pace under the peer's address, passes bytes through
    /// both ways, and sets the pace from its socket's samples (on loopback: no queue, no
    /// rate). With a target of zero nothing is registered.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn watched_streams_register_their_pace_and_pass_bytes() {
        use futures::{AsyncReadExt as _, AsyncWriteExt as _};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pacing = Pacing::new(10 * MS);
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut client = pacing.watch(libp2p::tcp::tokio::TcpStream(client));
        let mut server = Pacing::new(Duration::ZERO).watch(libp2p::tcp::tokio::TcpStream(server));
        assert!(server.control.is_none(), "a zero target paces nothing");
        // Paced or not, a socket's pace knows the handshake's round trip (the muxer's windows
        // are fitted to it), on the accepting side too.
        #[cfg(target_os = "linux")]
        assert!(
            server
                .pace
                .as_ref()
                .and_then(|p| p.base_rtt())
                .is_some_and(|rtt| rtt > Duration::ZERO),
            "the accepted socket's round trip"
        );
        let remote: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", addr.port())
            .parse()
            .unwrap();
        let pace = pacing
            .paces()
            .take(&libp2p::PeerId::random(), &remote)
            .expect("registered by the peer's address");
        #[cfg(target_os = "linux")]
        assert!(
            pace.base_rtt().is_some_and(|rtt| rtt > Duration::ZERO),
            "the handshake's round trip"
        );
        let data = vec![5u8; 1 << 20];
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 1 << 20];
            server.read_exact(&mut got).await.unwrap();
            got
        });
        for piece in data.chunks(64 * 1024) {
            client.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(reader.await.unwrap(), data);
        assert!(client.sampled.is_some(), "the socket was read");
        #[cfg(target_os = "linux")]
        {
            let read = tcp_info::read(client.fd.expect("a socket"), Instant::now())
                .expect("TCP_INFO reports round trips and acknowledged bytes");
            assert!(read.bytes_acked > 0, "{read:?}");
            assert!(read.min_rtt <= read.rtt, "{read:?}");
        }
        assert_eq!(pace.rate(), None, "no queue on loopback");
    }

    /// The path's queue is what the pacing above controls: sockets get the congestion control
    /// chosen for them, and one the kernel refuses leaves the system's (the connection works).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn sockets_get_the_chosen_congestion_control_or_keep_the_systems() {
        use futures::{AsyncReadExt as _, AsyncWriteExt as _};

        let system = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
            .expect("the system's congestion control")
            .trim()
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let congestion = |s: &Paced<libp2p::tcp::tokio::TcpStream>| {
            let name = socket2::SockRef::from(&s.inner.0).tcp_congestion().unwrap();
            String::from_utf8_lossy(&name)
                .trim_end_matches('\0')
                .to_string()
        };
        // Reno is built into every Linux and open to every process; the system's is another
        // unless it is Reno, and then CUBIC (built in as well) is the one to tell apart.
        let chosen = if system == "reno" { "cubic" } else { "reno" };
        for (name, expected) in [
            (chosen, chosen),
            ("", system.as_str()),
            ("no-such-cc", system.as_str()),
        ] {
            let pacing = Pacing::new(10 * MS).with_congestion(name);
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let mut client = pacing.watch(libp2p::tcp::tokio::TcpStream(client));
            let mut server = pacing.watch(libp2p::tcp::tokio::TcpStream(server));
            assert_eq!(congestion(&client), expected, "{name:?}: dialed");
            assert_eq!(congestion(&server), expected, "{name:?}: accepted");
            client.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping", "{name:?}");
        }
    }
}

//! `core::mux`: frames of the configured size on the wire, read by stock yamux; inbound streams a
//! peer opens faster than the swarm accepts them are held up to a bound, the rest reset.

use std::{
    collections::BTreeSet,
    future::poll_fn,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bcos_p2p_core::mux::{
    Config, DEFAULT_FRAME_SIZE, DEFAULT_WINDOW_GROWTH, FULL_GROWTH_RTT, MAX_FRAME_SIZE,
    MAX_PENDING_INBOUND, MIN_FRAME_SIZE, MIN_WINDOW_GROWTH, Muxer,
};
use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p_core::{
    muxing::StreamMuxer,
    upgrade::{InboundConnectionUpgrade as _, OutboundConnectionUpgrade as _},
};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt as _};

type Pipe = Compat<tokio::io::DuplexStream>;

const DATA: u8 = 0;
const WINDOW_UPDATE: u8 = 1;
const SYN: u16 = 1;
const RST: u16 = 8;

/// A yamux frame header as the spec lays it out.
fn header(kind: u8, flags: u16, stream: u32, length: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[1] = kind;
    h[2..4].copy_from_slice(&flags.to_be_bytes());
    h[4..8].copy_from_slice(&stream.to_be_bytes());
    h[8..12].copy_from_slice(&length.to_be_bytes());
    h
}

/// (type, flags, stream id, length) of every frame in `bytes`, skipping data bodies.
fn frames(bytes: &[u8]) -> Vec<(u8, u16, u32, u32)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() {
        let h = &bytes[at..at + 12];
        assert_eq!(h[0], 0, "yamux version at byte {at}");
        let kind = h[1];
        let flags = u16::from_be_bytes([h[2], h[3]]);
        let stream = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let length = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        out.push((kind, flags, stream, length));
        at += 12 + if kind == DATA { length as usize } else { 0 };
    }
    out
}

/// Passes everything through and keeps a copy of what was written.
struct Tap {
    inner: Pipe,
    written: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Polls `muxer` until it has read and handled everything that has arrived.
async fn drive<C: AsyncRead + AsyncWrite + Unpin>(muxer: &mut Muxer<C>) {
    poll_fn(|cx| match Pin::new(&mut *muxer).poll(cx) {
        Poll::Ready(Err(e)) => panic!("muxer failed: {e}"),
        _ => Poll::Ready(()),
    })
    .await
}

/// Sends `payload` on one stream from our muxer (with `config`) to a stock yamux connection and
/// returns the data frame body sizes our side put on the wire.
async fn transfer(config: Config, payload: &[u8]) -> Vec<u32> {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let written = Arc::new(Mutex::new(Vec::new()));
    let tap = Tap {
        inner: a.compat(),
        written: written.clone(),
    };
    let mut ours = config.upgrade_outbound(tap, "/yamux/1.0.0").await.unwrap();
    let mut stock =
        yamux::Connection::new(b.compat(), yamux::Config::default(), yamux::Mode::Server);

    let receiver = tokio::spawn(async move {
        let mut stream = poll_fn(|cx| stock.poll_next_inbound(cx))
            .await
            .expect("an inbound stream")
            .expect("no connection error");
        // The stream's data comes in only while the connection is polled.
        let driver = tokio::spawn(async move {
            while let Some(Ok(_)) = poll_fn(|cx| stock.poll_next_inbound(cx)).await {}
        });
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        driver.abort();
        got
    });
    let mut stream = poll_fn(|cx| Pin::new(&mut ours).poll_outbound(cx))
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        poll_fn(|cx| Pin::new(&mut ours).poll(cx)).await.ok();
    });
    stream.write_all(payload).await.unwrap();
    stream.close().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), receiver)
        .await
        .expect("the stock side read everything in time")
        .unwrap();
    driver.abort();
    assert!(got == payload, "stock yamux read back what was sent");
    let written = written.lock().unwrap().clone();
    frames(&written)
        .into_iter()
        .filter(|&(kind, _, stream, length)| kind == DATA && stream == 1 && length > 0)
        .map(|(_, _, _, length)| length)
        .collect()
}

#[test]
fn frame_size_is_clamped() {
    assert_eq!(Config::default().frame_size(), DEFAULT_FRAME_SIZE);
    assert_eq!(
        Config::default().set_frame_size(1).frame_size(),
        MIN_FRAME_SIZE
    );
    assert_eq!(
        Config::default().set_frame_size(usize::MAX).frame_size(),
        MAX_FRAME_SIZE
    );
    assert_eq!(
        Config::default().set_frame_size(40_000).frame_size(),
        40_000
    );
}

#[tokio::test]
async fn sends_frames_of_the_configured_size_that_stock_yamux_reads() {
    let payload: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();

    let sizes = transfer(Config::default(), &payload).await;
    assert_eq!(
        sizes.iter().map(|&n| n as usize).sum::<usize>(),
        payload.len()
    );
    assert_eq!(*sizes.iter().max().unwrap() as usize, DEFAULT_FRAME_SIZE);
    // 16 frames if every window update came in time; never the 64 of 16 KiB framing.
    assert!(
        sizes.len() < 32,
        "{} data frames for 1 MiB: {sizes:?}",
        sizes.len()
    );

    let mut small = Config::default();
    small.set_frame_size(16 * 1024);
    let sizes = transfer(small, &payload).await;
    assert_eq!(
        sizes.iter().map(|&n| n as usize).sum::<usize>(),
        payload.len()
    );
    assert_eq!(*sizes.iter().max().unwrap(), 16 * 1024);
    assert!(sizes.len() >= 64);
}

#[tokio::test]
async fn holds_at_most_max_pending_inbound_streams_and_resets_the_rest() {
    let (a, b) = tokio::io::duplex(1024 * 1024);
    let mut peer = a.compat();
    let mut ours = Config::default()
        .upgrade_inbound(b.compat(), "/yamux/1.0.0")
        .await
        .unwrap();
    let opened = MAX_PENDING_INBOUND as u32 + 44;
    let mut syns = Vec::new();
    for k in 0..opened {
        syns.extend(header(WINDOW_UPDATE, SYN, 2 * k + 1, 0));
    }
    peer.write_all(&syns).await.unwrap();
    peer.flush().await.unwrap();

    // The swarm drives the connection without accepting streams: it holds what it may.
    for _ in 0..3 {
        drive(&mut ours).await;
        tokio::task::yield_now().await;
    }
    let mut accepted = Vec::new();
    while let Poll::Ready(stream) =
        poll_fn(|cx| Poll::Ready(Pin::new(&mut ours).poll_inbound(cx))).await
    {
        accepted.push(stream.expect("no connection error"));
        assert!(accepted.len() <= opened as usize);
    }
    assert_eq!(accepted.len(), MAX_PENDING_INBOUND);
    let ids: Vec<u32> = accepted.iter().map(|s| s.id().val()).collect();
    assert_eq!(
        ids,
        (0..MAX_PENDING_INBOUND as u32)
            .map(|k| 2 * k + 1)
            .collect::<Vec<_>>()
    );

    // The others were reset, and the connection still carries data for the held ones.
    let mut hello = header(DATA, 0, 1, 5).to_vec();
    hello.extend(b"hello");
    peer.write_all(&hello).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut first = accepted.swap_remove(0);
        let mut buf = [0u8; 5];
        first.read_exact(&mut buf).await.unwrap();
        accepted.push(first);
        (buf, accepted)
    });
    let driver = tokio::spawn(async move {
        poll_fn(|cx| Pin::new(&mut ours).poll(cx)).await.ok();
    });
    let (buf, _held) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the held stream got its data")
        .unwrap();
    assert_eq!(&buf, b"hello");

    let expected: BTreeSet<u32> = (MAX_PENDING_INBOUND as u32..opened)
        .map(|k| 2 * k + 1)
        .collect();
    let mut reset = BTreeSet::new();
    let mut bytes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reset != expected && tokio::time::Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), peer.read(&mut chunk)).await
        {
            assert!(n > 0, "our side closed the connection");
            bytes.extend_from_slice(&chunk[..n]);
            let whole = bytes.len() / 12 * 12;
            reset = frames(&bytes[..whole])
                .into_iter()
                .filter(|&(_, flags, _, _)| flags & RST != 0)
                .map(|(_, _, stream, _)| stream)
                .collect();
        }
    }
    driver.abort();
    assert_eq!(
        reset, expected,
        "exactly the streams beyond the bound were reset"
    );
}

/// The largest credit our side (receiving, with `config`) grants stream 1 in one window
/// update while a stock yamux sender pushes `len` bytes as fast as it may and we read them
/// as they come. yamux sends an update once half the window is used, for the used part plus
/// any growth, so the largest update is at most the stream's largest window: the most the
/// sender can have in flight, in our socket and buffers, ahead of our reader.
async fn largest_grant(config: Config, len: usize) -> u32 {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let written = Arc::new(Mutex::new(Vec::new()));
    let tap = Tap {
        inner: a.compat(),
        written: written.clone(),
    };
    let mut ours = config.upgrade_inbound(tap, "/yamux/1.0.0").await.unwrap();
    let mut stock =
        yamux::Connection::new(b.compat(), yamux::Config::default(), yamux::Mode::Client);
    let mut out = poll_fn(|cx| stock.poll_new_outbound(cx)).await.unwrap();
    let stock_driver = tokio::spawn(async move {
        while let Some(Ok(_)) = poll_fn(|cx| stock.poll_next_inbound(cx)).await {}
    });
    let sender = tokio::spawn(async move {
        let chunk = vec![0x5au8; 1024 * 1024];
        for _ in 0..len / chunk.len() {
            out.write_all(&chunk).await.unwrap();
        }
        out.close().await.unwrap();
    });
    let mut stream = poll_fn(|cx| {
        let _ = Pin::new(&mut ours).poll(cx);
        Pin::new(&mut ours).poll_inbound(cx)
    })
    .await
    .unwrap();
    let driver = tokio::spawn(async move {
        poll_fn(|cx| Pin::new(&mut ours).poll(cx)).await.ok();
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    let read = async {
        loop {
            match stream.read(&mut buf).await.unwrap() {
                0 => break,
                n => got += n,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("read everything in time");
    assert_eq!(got, len);
    sender.await.unwrap();
    driver.abort();
    stock_driver.abort();
    let written = written.lock().unwrap().clone();
    frames(&written)
        .into_iter()
        .filter(|&(kind, _, stream, _)| kind == WINDOW_UPDATE && stream == 1)
        .map(|(_, _, _, length)| length)
        .max()
        .unwrap_or(0)
}

/// A bulk stream's window grows at most by the configured growth, so another stream's frame
/// never waits behind more than that of it in the receiver's socket; by default 8 MiB.
#[tokio::test]
async fn stream_windows_grow_at_most_by_the_configured_growth() {
    assert_eq!(
        Config::default().window_growth(),
        Some(DEFAULT_WINDOW_GROWTH)
    );
    let start = yamux::DEFAULT_CREDIT;
    for growth in [1024 * 1024u32, DEFAULT_WINDOW_GROWTH as u32] {
        let mut config = Config::default();
        config.set_window_growth(Some(growth as usize));
        // Without the bound this load grows the window past 6 MiB here.
        let grant = largest_grant(config, 96 * 1024 * 1024).await;
        assert!(
            grant <= start + growth,
            "granted {grant} at once with growth {growth}"
        );
        assert!(grant >= start / 2, "window updates seen ({grant})");
    }
    // No bound: yamux's own 1 GiB for the connection.
    let mut open = Config::default();
    open.set_window_growth(None).set_max_num_streams(64);
    assert_eq!(open.window_growth(), None);
}

#[test]
fn window_growth_is_fitted_to_the_round_trip() {
    let fitted = |growth: Option<usize>, rtt_ms: f64| {
        let mut config = Config::default();
        config.set_window_growth(growth);
        config.fit_to_round_trip(Duration::from_secs_f64(rtt_ms / 1000.0));
        config.window_growth()
    };
    let full = Some(DEFAULT_WINDOW_GROWTH);
    // Loopback and a LAN: the floor; half the full round trip: half; longer: all of it.
    assert_eq!(fitted(full, 0.05), Some(MIN_WINDOW_GROWTH));
    assert_eq!(fitted(full, 5.0), Some(MIN_WINDOW_GROWTH));
    assert_eq!(
        fitted(full, FULL_GROWTH_RTT.as_secs_f64() * 500.0),
        Some(DEFAULT_WINDOW_GROWTH / 2)
    );
    assert_eq!(fitted(full, 60.0), full);
    assert_eq!(fitted(full, 250.0), full);
    // Never above what was set, and no bound stays no bound.
    assert_eq!(fitted(Some(64 * 1024), 0.05), Some(64 * 1024));
    assert_eq!(fitted(Some(0), 100.0), Some(0));
    assert_eq!(fitted(None, 0.05), None);
}

// What interop.mjs and unicast-client.mjs share: logging (stderr only: stdout carries the
// results), the js-libp2p node both use (TCP + stock /tls/1.0.0 + yamux, ping, identify), and
// bounded waiting.
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { tls } from '@libp2p/tls'
import { createLibp2p } from 'libp2p'

/** Logs a line to stderr, with a timestamp. */
export function log (...args) {
  console.error(new Date().toISOString(), ...args)
}

/** Key types a node may use: js-libp2p's default is Ed25519; bcos-p2p NodeIds need secp256k1. */
const KEY_TYPES = new Map([['ed25519', 'Ed25519'], ['secp256k1', 'secp256k1']])

/**
 * Starts a js-libp2p node: TCP, stock libp2p-tls, yamux, ping and identify; listening on
 * `listen` (multiaddrs; none for a dialer); identity a fresh key of `keyType`.
 */
export async function createNode ({ listen = [], keyType = 'ed25519' } = {}) {
  const type = KEY_TYPES.get(keyType)
  if (type === undefined) {
    throw new Error(`unknown key type ${JSON.stringify(keyType)} (known: ${[...KEY_TYPES.keys()].join(', ')})`)
  }
  return createLibp2p({
    privateKey: await generateKeyPair(type),
    addresses: { listen },
    transports: [tcp()],
    connectionEncrypters: [tls()],
    streamMuxers: [yamux()],
    // The peers are on loopback or private addresses, which the default gater may refuse.
    connectionGater: { denyDialMultiaddr: async () => false },
    // No background pings of our own: the only ping on the wire is the measured one.
    connectionMonitor: { enabled: false },
    services: { ping: ping(), identify: identify() }
  })
}

/**
 * Waits for libp2p's own identify exchange with `peer` (a PeerId string; it runs on every new
 * connection, so call this before dialing) and logs the peer's protocols and agent on stderr as
 * one line, `identify {"peer":..,"agent":..,"protocols":[..]}`, which the Rust tests read.
 */
export function logIdentify (node, peer, signal) {
  const { promise, resolve, reject } = Promise.withResolvers()
  const onIdentify = (evt) => {
    if (evt.detail.peerId.toString() !== peer) return
    const result = evt.detail
    const summary = {
      peer,
      agent: result.agentVersion ?? null,
      protocolVersion: result.protocolVersion ?? null,
      protocols: [...result.protocols].sort()
    }
    log(`identify ${JSON.stringify(summary)}`)
    done()
    resolve(summary)
  }
  const onAbort = () => {
    done()
    reject(new Error(`no identify from ${peer}: ${signal.reason?.message ?? 'aborted'}`))
  }
  const done = () => {
    node.removeEventListener('peer:identify', onIdentify)
    signal.removeEventListener('abort', onAbort)
  }
  node.addEventListener('peer:identify', onIdentify)
  signal.addEventListener('abort', onAbort)
  // Not awaited on every path (a failed dial ends the run first): no unhandled rejection.
  promise.catch(() => {})
  return promise
}

/** The PeerId string a multiaddr ends in (`/p2p/<PeerId>`), or an error. */
export function peerOf (addr) {
  const last = addr.getComponents().at(-1)
  if (last?.name !== 'p2p' || !last.value) throw new Error(`${addr} does not end in /p2p/PEER`)
  return last.value
}

/**
 * Ends the process with `code` if `main` has not finished within `seconds`: every run is
 * bounded in time, whatever the peer does. Returns a function that cancels the deadline.
 */
export function deadline (seconds, what) {
  const timer = setTimeout(() => {
    log(`timed out after ${seconds} s: ${what}`)
    process.exit(1)
  }, seconds * 1000)
  return () => clearTimeout(timer)
}

/** Parses a positive number of seconds from an environment value, with a default. */
export function seconds (value, fallback, name) {
  if (value === undefined || value === '') return fallback
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0) {
    throw new Error(`${name} must be a positive number of seconds, not ${JSON.stringify(value)}`)
  }
  return n
}

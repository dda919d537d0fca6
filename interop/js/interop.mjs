// A js-libp2p peer for the libp2p/test-plans transport-interop contract, so bcos-p2p's interop
// binary can be tested against a libp2p implementation no one here wrote.
//
// Environment (test-plans names): transport (tcp), security (tls), muxer (yamux), is_dialer
// (true|false), ip (listen address, default 0.0.0.0), redis_addr (host:port, default
// redis:6379), test_timeout_seconds (default 180). Ours: key_type (ed25519, js-libp2p's default,
// or secp256k1, a key bcos-p2p can show as a NodeId).
//
// The listener RPUSHes its /p2p/ multiaddr to the Redis list `listenerAddr` and waits (until the
// timeout or a signal). The dialer BLPOPs that address, dials, pings, and prints one line on
// stdout: {"handshakePlusOneRTTMillis":..,"pingRTTMilllis":..} (sic). Then it waits for identify and
// logs the peer's protocols on stderr (`identify {...}`). Everything else goes to stderr.
//
// Run with `node --import ./polyfill.mjs interop.mjs` (Node 20 lacks Promise.withResolvers).
import { multiaddr } from '@multiformats/multiaddr'
import { createClient } from 'redis'
import { createNode, deadline, log, logIdentify, peerOf, seconds } from './lib.mjs'

const SUPPORTED = { transport: ['tcp'], security: ['tls'], muxer: ['yamux'] }

function settings (env) {
  for (const [name, values] of Object.entries(SUPPORTED)) {
    if (!values.includes(env[name])) {
      throw new Error(`${name}=${JSON.stringify(env[name] ?? null)} is not supported (supported: ${values.join(', ')})`)
    }
  }
  if (env.is_dialer !== 'true' && env.is_dialer !== 'false') {
    throw new Error(`is_dialer must be true or false, not ${JSON.stringify(env.is_dialer ?? null)}`)
  }
  return {
    isDialer: env.is_dialer === 'true',
    ip: env.ip || '0.0.0.0',
    redisAddr: env.redis_addr || 'redis:6379',
    timeout: seconds(env.test_timeout_seconds ?? env.test_timeout_secs, 180, 'test_timeout_seconds'),
    keyType: env.key_type || 'ed25519'
  }
}

async function connectRedis (addr) {
  const client = createClient({
    url: `redis://${addr}`,
    // Retry a refused connection every 100 ms; the overall deadline bounds the waiting.
    socket: { reconnectStrategy: () => 100 }
  })
  client.on('error', (err) => log(`redis: ${err.message}`))
  await client.connect()
  return client
}

/** The address to publish: with ip 0.0.0.0, a non-loopback one first (as test-plans does). */
function publishedAddr (node) {
  const addrs = node.getMultiaddrs().map((ma) => ma.toString())
  const preferred = addrs.filter((a) => !a.startsWith('/ip4/127.') && !a.startsWith('/ip6/::1/'))
  const addr = preferred[0] ?? addrs[0]
  if (addr === undefined) throw new Error('the node has no listen address')
  return addr
}

async function listen (cfg, redis) {
  const node = await createNode({ listen: [`/ip4/${cfg.ip}/tcp/0`], keyType: cfg.keyType })
  log(`listener ${node.peerId} on ${node.getMultiaddrs().join(' ')}`)
  node.addEventListener('connection:open', (evt) => {
    const connection = evt.detail
    log(`connection from ${connection.remotePeer} at ${connection.remoteAddr}`)
  })
  node.addEventListener('peer:identify', (evt) => {
    const { peerId, agentVersion, protocols } = evt.detail
    log(`identified ${peerId}: agent ${agentVersion ?? '?'}, protocols ${[...protocols].sort().join(' ')}`)
  })
  const addr = publishedAddr(node)
  await redis.sendCommand(['RPUSH', 'listenerAddr', addr])
  log(`published ${addr}; waiting for the dialer (up to ${cfg.timeout} s)`)
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, cfg.timeout * 1000)
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.once(signal, () => {
        log(`${signal}: stopping`)
        clearTimeout(timer)
        resolve()
      })
    }
  })
  await node.stop()
}

async function dial (cfg, redis) {
  const node = await createNode({ keyType: cfg.keyType })
  log(`dialer ${node.peerId}`)
  const reply = await redis.sendCommand(['BLPOP', 'listenerAddr', String(cfg.timeout)])
  if (!Array.isArray(reply) || reply.length !== 2) {
    throw new Error(`no listener address in Redis within ${cfg.timeout} s`)
  }
  const target = multiaddr(String(reply[1]))
  const signal = AbortSignal.timeout(cfg.timeout * 1000)

  const identified = logIdentify(node, peerOf(target), signal)
  log(`dialing ${target}`)
  const start = Date.now()
  const connection = await node.dial(target, { signal })
  const pingRTT = await node.services.ping.ping(connection.remotePeer, { signal })
  const handshakePlusOneRTT = Date.now() - start
  console.log(JSON.stringify({
    handshakePlusOneRTTMillis: handshakePlusOneRTT,
    pingRTTMilllis: pingRTT
  }))

  try {
    await identified
  } catch (err) {
    // The interop result above stands; the Rust test, which needs identify, sees this line.
    log(`identify failed: ${err.message}`)
  }
  await node.stop()
}

async function main () {
  const cfg = settings(process.env)
  // The listener waits out the timeout by design; the dialer must finish well within it.
  const cancel = deadline(cfg.timeout + 10, cfg.isDialer ? 'dialer' : 'listener')
  const redis = await connectRedis(cfg.redisAddr)
  try {
    await (cfg.isDialer ? dial(cfg, redis) : listen(cfg, redis))
  } finally {
    cancel()
    redis.destroy()
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    log(`error: ${err.stack ?? err}`)
    process.exit(1)
  }
)

// Node 20 lacks Promise.withResolvers (Node 22 has it); js-libp2p 3.x calls it. Loaded before
// everything else with `node --import ./polyfill.mjs`. Does nothing on a Node that has it.
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers () {
      let resolve
      let reject
      const promise = new this((res, rej) => {
        resolve = res
        reject = rej
      })
      return { promise, resolve, reject }
    }
  })
}

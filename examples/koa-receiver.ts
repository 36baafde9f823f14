/**
 * A Koa 3 app that accepts callbacks at POST /callbacks, only when they verify, each id once.
 *
 *   CALLBACK_SECRET=whsec_… PORT=3000 node --import tsx examples/koa-receiver.ts
 *
 * Without CALLBACK_SECRET it makes a throwaway one for this run and prints it, so that you can sign
 * test callbacks with it.
 */
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { pathToFileURL } from 'node:url'
import Koa from 'koa'
import { generateSecret } from 'endpoint-callback'
import { callbackReceiver } from 'endpoint-callback/koa'

export async function start(options: { port?: number; secret: string }) {
  const app = new Koa()
  const receive = callbackReceiver({ secret: options.secret, replayGuard: true })
  app.use(async (ctx, next) => {
    if (ctx.method !== 'POST' || ctx.path !== '/callbacks') return next()
    await receive(ctx, async () => {
      const callback = ctx.state.callback!
      console.log(`received ${callback.type} ${callback.id} ${JSON.stringify(callback.data)}`)
      ctx.status = 204
    })
  })
  const server = app.listen(options.port ?? 0, '127.0.0.1')
  await once(server, 'listening')
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/callbacks`
  return { url, close: () => new Promise<void>((resolve) => server.close(() => resolve())) }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  let secret = process.env.CALLBACK_SECRET
  if (secret === undefined) {
    secret = generateSecret()
    console.log(`no CALLBACK_SECRET set; throwaway secret for this run: ${secret}`)
  }
  const { url } = await start({ port: Number(process.env.PORT ?? 0), secret })
  console.log(`Koa receiver listening on ${url}`)
}

/**
 * Node's request and response in and out of the Web `Request`/`Response` the inspector speaks,
 * for the Express and Koa mounts.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'

const maxFormBytes = 16_384

/** The Web `Request` for a Node request; `parsedBody` is what a body parser already read, if any. */
export async function webRequest(req: IncomingMessage, url: string, parsedBody: unknown): Promise<Request> {
  const headers = new Headers()
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue
    for (const each of Array.isArray(value) ? value : [value]) headers.append(name, each)
  }
  const method = req.method ?? 'GET'
  if (method === 'GET' || method === 'HEAD') return new Request(url, { method, headers })
  let body: string
  if (parsedBody !== null && typeof parsedBody === 'object' && !Buffer.isBuffer(parsedBody)) {
    // a urlencoded parser ran before the mount: the form again, as it came
    body = new URLSearchParams(Object.entries(parsedBody as Record<string, unknown>).map(([name, value]): [string, string] => [name, String(value)])).toString()
  } else if (typeof parsedBody === 'string' || Buffer.isBuffer(parsedBody)) {
    body = parsedBody.toString()
  } else {
    body = await readBody(req)
  }
  return new Request(url, { method, headers, body })
}

async function readBody(req: IncomingMessage): Promise<string> {
  if (req.readableEnded) return ''
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    // past the limit the inspector refuses the form anyway: read no more than it needs to say so
    if (size > maxFormBytes + 1) break
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks).toString('utf8')
}

/** The URL a Node request was made to, as its client saw it (`protocol` as the framework trusts it). */
export function requestUrl(protocol: string, host: string | undefined, path: string): string {
  return `${protocol}://${host ?? 'localhost'}${path}`
}

/** Writes a Web `Response` to Node's response, every `set-cookie` kept apart. */
export async function sendResponse(res: ServerResponse, response: Response): Promise<void> {
  res.statusCode = response.status
  response.headers.forEach((value, name) => {
    if (name !== 'set-cookie') res.setHeader(name, value)
  })
  const cookies = response.headers.getSetCookie()
  if (cookies.length > 0) res.setHeader('set-cookie', cookies)
  res.end(Buffer.from(await response.arrayBuffer()))
}

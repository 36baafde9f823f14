/**
 * Cross-site request forgery: every action is a POST that must carry the token of the inspector's
 * cookie (double submit: a page of another site can neither read the cookie nor set the field) and
 * come from a page of the same origin (`Origin`, or `Sec-Fetch-Site` where a browser sends no
 * `Origin`). The cookie is `HttpOnly` and `SameSite=Strict`, so it is not even sent along with a
 * request another site starts.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto'

export const csrfCookie = 'ec_inspector_csrf'

/** The token of the request's cookie, when it has a well-formed one. */
export function csrfTokenOf(request: Request): string | undefined {
  const header = request.headers.get('cookie') ?? ''
  for (const part of header.split(';')) {
    const [name, ...value] = part.trim().split('=')
    if (name === csrfCookie) {
      const token = value.join('=')
      return /^[A-Za-z0-9_-]{43}$/.test(token) ? token : undefined
    }
  }
  return undefined
}

export function newCsrfToken(): string {
  return randomBytes(32).toString('base64url')
}

/** The `set-cookie` value for `token`, scoped to where the inspector is mounted. */
export function csrfSetCookie(token: string, path: string, secure: boolean): string {
  return `${csrfCookie}=${token}; Path=${path || '/'}; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`
}

/** Why an action must be refused, or `undefined` when it may run. */
export function csrfRefusal(request: Request, form: URLSearchParams): string | undefined {
  const url = new URL(request.url)
  const origin = request.headers.get('origin')
  if (origin !== null) {
    // The host must match; the scheme may differ behind a proxy that ends TLS.
    let host: string
    try {
      host = new URL(origin).host
    } catch {
      return 'the request came from another origin'
    }
    if (host !== url.host) return 'the request came from another origin'
  } else if (request.headers.get('sec-fetch-site') !== 'same-origin') {
    return 'the request does not say it came from this origin'
  }
  const cookie = csrfTokenOf(request)
  const field = form.get('csrf') ?? ''
  if (cookie === undefined || field.length !== cookie.length || !timingSafeEqual(Buffer.from(field), Buffer.from(cookie))) {
    return 'the form is stale or came from elsewhere (missing or wrong CSRF token): reload the page'
  }
  return undefined
}

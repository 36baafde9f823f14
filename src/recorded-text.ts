/**
 * Text an attempt record keeps (the first characters of a receiver's answer, an error message) comes
 * from outside and is written to every store. PostgreSQL's `text` refuses U+0000, and an unpaired
 * UTF-16 surrogate (left by cutting an answer in the middle of a pair) is no valid Unicode in any
 * store or log: both are replaced by U+FFFD, the replacement character, as a UTF-8 decoder does
 * with bytes it cannot read. Everything else is kept as it is.
 */

/** NUL, or any surrogate (paired ones are told apart from lone ones only when one is found). */
const SUSPECT = /[\u0000\uD800-\uDFFF]/
const UNSAFE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g

/**
 * `text` cut to at most `maxChars` UTF-16 units without splitting a surrogate pair, with NUL and
 * unpaired surrogates replaced by U+FFFD: safe to store in PostgreSQL, Redis or memory alike.
 */
export function recordableText(text: string, maxChars = Number.POSITIVE_INFINITY): string {
  if (text.length > maxChars) {
    const last = text.charCodeAt(maxChars - 1)
    // A high surrogate as the last kept unit would lose its partner: cut before it.
    text = text.slice(0, last >= 0xd800 && last <= 0xdbff ? maxChars - 1 : maxChars)
  }
  return SUSPECT.test(text) ? text.replace(UNSAFE, '\uFFFD') : text
}

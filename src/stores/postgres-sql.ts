/**
 * Every SQL statement of the PostgreSQL store, as plain builder functions of the (already
 * validated) schema name, so the whole of what runs against a user's database can be read in one
 * place and printed with `postgresSchemaSql`.
 *
 * All instants are parameters: the store never asks the database for the time, so tests can run
 * with fixed instants and many machines agree on "due" through the caller's clock only.
 */

/** `schema` is a validated identifier; quoting keeps mixed case and reserved words safe. */
export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}

/** The channel that says "a task may be due"; its payload is the due instant in epoch ms. */
export function dueChannel(schema: string): string {
  return `${schema}_due`
}

/**
 * The host name of `callback_url` in lower case, without user info or port (an IPv6 address keeps
 * its brackets), as `new URL(url).hostname` gives it for the normalised URLs tasks store. The
 * search by host and its index use this very expression.
 */
export const callbackHostSql = `lower(substring(callback_url from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(\\[[^]]*\\]|[^:/?#]*)'))`

interface Migration {
  version: number
  description: string
  sql(schema: string): string
}

/**
 * Versioned migrations. Each statement is idempotent on its own (`IF NOT EXISTS`), so running the
 * whole script again, or after a partial manual run, changes nothing.
 */
export const migrations: readonly Migration[] = [
  {
    version: 1,
    description: 'tasks, their attempt history, and the indexes that keep claiming fast',
    sql: (schema) => {
      const s = quoteIdentifier(schema)
      return `CREATE TABLE IF NOT EXISTS ${s}.tasks (
  id               text PRIMARY KEY,
  status           text NOT NULL CHECK (status IN ('pending', 'scheduled', 'delivering', 'delivered', 'failed', 'cancelled')),
  callback_url     text NOT NULL,
  event            text NOT NULL,
  idempotency_key  text UNIQUE,
  secret           json,
  metadata         json,
  body             text,
  content_type     text,
  attempts         integer NOT NULL DEFAULT 0,
  -- due time while scheduled, lease expiry while delivering
  next_attempt_at  timestamptz,
  deadline         timestamptz,
  lease_token      text,
  -- the caller's "now" when the current lease was taken: a release without a time is due then
  leased_at        timestamptz,
  last_error       text,
  created_at       timestamptz NOT NULL,
  updated_at       timestamptz NOT NULL
);

-- Only the rows a worker may claim are in this index, so it stays small however many delivered
-- rows pile up.
CREATE INDEX IF NOT EXISTS tasks_due_idx ON ${s}.tasks (next_attempt_at)
  WHERE status IN ('scheduled', 'delivering');

-- For the retention helper.
CREATE INDEX IF NOT EXISTS tasks_finished_idx ON ${s}.tasks (updated_at)
  WHERE status IN ('delivered', 'failed', 'cancelled');

CREATE TABLE IF NOT EXISTS ${s}.attempts (
  id             bigserial PRIMARY KEY,
  task_id        text NOT NULL REFERENCES ${s}.tasks (id) ON DELETE CASCADE,
  attempt        integer NOT NULL,
  started_at     timestamptz NOT NULL,
  duration_ms    double precision NOT NULL,
  status         integer,
  error          text,
  response_body  text,
  outcome        text NOT NULL
);

CREATE INDEX IF NOT EXISTS attempts_task_idx ON ${s}.attempts (task_id, id);`
    }
  },
  {
    version: 2,
    description: "the receiver's encryption key and intent verification of each task",
    sql: (schema) => {
      const s = quoteIdentifier(schema)
      // Nullable, no default: adding them rewrites no row of an existing table.
      return `ALTER TABLE ${s}.tasks ADD COLUMN IF NOT EXISTS encryption_key json;
ALTER TABLE ${s}.tasks ADD COLUMN IF NOT EXISTS verify_intent boolean;`
    }
  },
  {
    version: 3,
    // Only failed rows are in it, so it costs the write path nothing while tasks deliver. Built in
    // the migration's transaction, it reads the table once while holding off writes to it.
    description: 'an index of failed tasks by when they failed, for listing and redelivering them',
    sql: (schema) => `CREATE INDEX IF NOT EXISTS tasks_failed_idx ON ${quoteIdentifier(schema)}.tasks (updated_at, id)
  WHERE status = 'failed';`
  },
  {
    version: 4,
    // Each search filter walks its own index newest first and stops at the page's end, so a page
    // costs the same with a million tasks as with a hundred. They are written on every change of
    // a task: about one index entry more per filter and update. Built in the migration's
    // transaction, they read the table once while holding off writes to it; on a large table,
    // create them beforehand with CREATE INDEX CONCURRENTLY under the same names. The attempts'
    // index carries the outcome, so the overview's chart counts from the index alone.
    description: 'indexes for searching tasks (status, event, callback host, time) and counting recent attempts',
    sql: (schema) => {
      const s = quoteIdentifier(schema)
      return `CREATE INDEX IF NOT EXISTS tasks_status_updated_idx ON ${s}.tasks (status, updated_at, id);
CREATE INDEX IF NOT EXISTS tasks_updated_idx ON ${s}.tasks (updated_at, id);
CREATE INDEX IF NOT EXISTS tasks_event_updated_idx ON ${s}.tasks (event, updated_at, id);
CREATE INDEX IF NOT EXISTS tasks_host_updated_idx ON ${s}.tasks ((${callbackHostSql}), updated_at, id);
CREATE INDEX IF NOT EXISTS attempts_started_idx ON ${s}.attempts (started_at) INCLUDE (outcome);`
    }
  },
  {
    version: 5,
    description: "each task's destination, the attempts in flight per destination, and the destinations held back",
    sql: (schema) => {
      const s = quoteIdentifier(schema)
      // Nullable: rows stored before this version keep no destination and are not limited.
      return `ALTER TABLE ${s}.tasks ADD COLUMN IF NOT EXISTS destination text;

-- Counting a destination's attempts in flight reads only the rows being delivered.
CREATE INDEX IF NOT EXISTS tasks_delivering_idx ON ${s}.tasks (destination) WHERE status = 'delivering';

-- Destinations held back (throttled, or their circuit breaker open), shared by every worker. A
-- healthy destination has no row.
CREATE TABLE IF NOT EXISTS ${s}.destinations (
  destination  text PRIMARY KEY,
  state        text NOT NULL CHECK (state IN ('throttled', 'open', 'probing')),
  until        timestamptz NOT NULL,
  openings     integer NOT NULL DEFAULT 0,
  reason       text,
  updated_at   timestamptz NOT NULL
);`
    }
  },
  {
    version: 6,
    // A pending task's next_attempt_at is when it expires unless its result comes first; only
    // pending rows are in it, so delivering costs it nothing.
    description: 'an index of pending tasks by when they expire, for the workers that fail them',
    sql: (schema) => `CREATE INDEX IF NOT EXISTS tasks_pending_idx ON ${quoteIdentifier(schema)}.tasks (next_attempt_at)
  WHERE status = 'pending';`
  },
  {
    version: 7,
    description: "the breaker's failure tallies shared by every worker, and a destination for unfinished tasks stored before version 5",
    sql: (schema) => {
      const s = quoteIdentifier(schema)
      // A destination that never failed has no row: an answered attempt reads one index page and writes nothing.
      return `CREATE TABLE IF NOT EXISTS ${s}.destination_tallies (
  destination  text PRIMARY KEY,
  in_a_row     integer NOT NULL,
  attempts     integer NOT NULL,
  failures     integer NOT NULL,
  window_ends  timestamptz NOT NULL
);

-- Tasks stored before version 5 have no destination, and claims would not limit them: the ones
-- still to be sent get their callback URL's origin, the default destination. Finished tasks keep none.
UPDATE ${s}.tasks SET destination = ${originSql('callback_url')}
WHERE destination IS NULL AND status IN ('pending', 'scheduled', 'delivering');`
    }
  }
]

/**
 * SQL for the origin (`scheme://host[:port]`, lower case) of a stored callback URL, as
 * `new URL(url).origin` gives it for the normalised URLs the library stores (default ports already
 * left out, user information dropped).
 */
export function originSql(column: string): string {
  return `lower(regexp_replace(${column}, '^([A-Za-z][A-Za-z0-9+.-]*://)(?:[^@/?#]*@)?([^/?#]*).*$', '\\1\\2'))`
}

/** The newest schema version this code knows. */
export const latestVersion = migrations[migrations.length - 1]!.version

/**
 * The migration script from `fromVersion` (exclusive) to the latest, in one transaction. An
 * advisory lock serialises concurrent migrators (two processes starting at once).
 */
export function migrationScript(schema: string, fromVersion = 0): string {
  const s = quoteIdentifier(schema)
  const pending = migrations.filter((migration) => migration.version > fromVersion)
  const parts = [
    `-- endpoint-callback schema ${quoteIdentifier(schema)}, version ${latestVersion}`,
    'BEGIN;',
    `SELECT pg_advisory_xact_lock(hashtext('endpoint-callback:' || ${literal(schema)}));`,
    `CREATE SCHEMA IF NOT EXISTS ${s};`,
    `CREATE TABLE IF NOT EXISTS ${s}.migrations (
  version     integer PRIMARY KEY,
  applied_at  timestamptz NOT NULL DEFAULT now()
);`
  ]
  for (const migration of pending) {
    parts.push(
      `-- ${migration.version}: ${migration.description}`,
      `${migration.sql(schema)}`,
      `INSERT INTO ${s}.migrations (version) VALUES (${migration.version}) ON CONFLICT (version) DO NOTHING;`
    )
  }
  parts.push('COMMIT;')
  return `${parts.join('\n\n')}\n`
}

function literal(value: string): string {
  return `'${value.replaceAll("'", "''")}'`
}

/** The applied version, or no row when the schema or table does not exist yet. */
export function currentVersionSql(schema: string): string {
  return `SELECT max(version)::int AS version FROM ${quoteIdentifier(schema)}.migrations`
}

// json columns as text, parsed by the store, so a pool with its own type parsers reads them alike
const taskColumns = `id, status, callback_url, event, idempotency_key, secret::text AS secret, metadata::text AS metadata, body, content_type,
  attempts, next_attempt_at, deadline, lease_token, last_error, created_at, updated_at, encryption_key::text AS encryption_key, verify_intent,
  destination`

/**
 * $1 id, $2 callback_url, $3 event, $4 idempotency_key, $5 secret (json), $6 metadata (json),
 * $7 deadline, $8 created_at, $9 encryption_key (json), $10 verify_intent (true or null),
 * $11 body (null: pending), $12 content_type, $13 next_attempt_at (due, or a pending task's
 * expiry), $14 due channel, $15 destination. Returns the row only when it was inserted. A task with its body is
 * `scheduled` and announced; inside the caller's transaction the notification goes out at commit.
 */
export function insertTaskSql(schema: string): string {
  return `WITH inserted AS (
INSERT INTO ${quoteIdentifier(schema)}.tasks
  (id, status, callback_url, event, idempotency_key, secret, metadata, deadline, created_at, updated_at, encryption_key, verify_intent,
   body, content_type, next_attempt_at, destination)
VALUES ($1, CASE WHEN $11::text IS NULL THEN 'pending' ELSE 'scheduled' END, $2, $3, $4, $5::json, $6::json, $7::timestamptz,
  $8::timestamptz, $8::timestamptz, $9::json, $10::boolean, $11::text, $12::text, $13::timestamptz, $15::text)
ON CONFLICT DO NOTHING
RETURNING ${taskColumns}
)
SELECT *, CASE WHEN status = 'scheduled' THEN
  pg_notify($14, (extract(epoch FROM next_attempt_at) * 1000)::bigint::text)::text END AS notified
FROM inserted`
}

/**
 * Many tasks in one statement, as {@link insertTaskSql} inserts one. $1…$14 are arrays, one element
 * per task (null where a task has no value; an empty array for a column no task has, which unnest
 * pads with nulls): $1 id, $2 callback_url, $3 event, $4 idempotency_key, $5 secret (json text),
 * $6 metadata (json text), $7 deadline, $8 created_at, $9 encryption_key (json text),
 * $10 verify_intent, $11 body, $12 content_type, $13 next_attempt_at, $14 destination; $15 due
 * channel; when `keyed`, $16 the batch's idempotency keys. The batch has no key twice (the store
 * keeps the first). A batch without keys (`keyed` false) has a statement of its own that looks for
 * no stored task.
 *
 * One row per task already stored under one of the batch's keys (`kind` 'existing', every column;
 * only when `keyed`), one per task inserted ('inserted', its id), and one 'notified' row: a single
 * notification for the batch, with the earliest due instant of the scheduled tasks inserted (none
 * for a batch of pending tasks). An id already stored is a unique violation of the whole statement,
 * which then stores nothing. The rows already stored are read with the statement's snapshot, so
 * they never include the ones it inserts; a key a racing transaction committed while this one
 * waited on it is in neither set (the store asks again).
 */
export function insertTasksSql(schema: string, keyed: boolean): string {
  const s = quoteIdentifier(schema)
  const columns = taskColumns.split(',').map((column) => column.trim())
  const nulls = columns.slice(1).map((column) => `NULL AS ${column.split(/\s+/).pop()}`).join(', ')
  return `WITH input AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::timestamptz[],
    $9::text[], $10::boolean[], $11::text[], $12::text[], $13::timestamptz[], $14::text[])
    AS input (id, callback_url, event, idempotency_key, secret, metadata, deadline, created_at, encryption_key, verify_intent,
      body, content_type, next_attempt_at, destination)
),
inserted AS (
  INSERT INTO ${s}.tasks
    (id, status, callback_url, event, idempotency_key, secret, metadata, deadline, created_at, updated_at, encryption_key, verify_intent,
     body, content_type, next_attempt_at, destination)
  SELECT id, CASE WHEN body IS NULL THEN 'pending' ELSE 'scheduled' END, callback_url, event, idempotency_key, secret::json, metadata::json,
    deadline, created_at, created_at, encryption_key::json, verify_intent, body, content_type, next_attempt_at, destination
  FROM input
  -- Keys in one order for every batch: two batches racing for the same keys then wait for each
  -- other's key at most in one direction, never in a cycle (a deadlock). Tasks without a key in
  -- id order: the indexes ending in id then fill their pages in order (a quarter smaller).
  ORDER BY idempotency_key, id
  ON CONFLICT (idempotency_key) DO NOTHING
  RETURNING id, status, next_attempt_at
)
${keyed ? `SELECT 'existing' AS kind, ${columns.join(', ')} FROM ${s}.tasks WHERE idempotency_key = ANY($16::text[])
UNION ALL
` : ''}SELECT 'inserted'${keyed ? '' : ' AS kind'}, id${keyed ? `, ${nulls}` : ''} FROM inserted
UNION ALL
SELECT 'notified', (SELECT pg_notify($15, (extract(epoch FROM min(next_attempt_at)) * 1000)::bigint::text)::text
  FROM inserted WHERE status = 'scheduled' HAVING count(*) > 0)${keyed ? `, ${nulls}` : ''}`
}

/**
 * Outbox: attaches the result to a pending task and makes it due at once, unleased.
 * $1 id, $2 body, $3 content_type, $4 now, $5 due channel.
 */
export function scheduleSql(schema: string): string {
  return `WITH scheduled AS (
UPDATE ${quoteIdentifier(schema)}.tasks
SET status = 'scheduled', body = $2, content_type = $3, next_attempt_at = $4::timestamptz,
    updated_at = GREATEST(updated_at, $4::timestamptz)
WHERE id = $1 AND status = 'pending'
RETURNING ${taskColumns}
)
SELECT *, pg_notify($5, (extract(epoch FROM next_attempt_at) * 1000)::bigint::text)::text AS notified FROM scheduled`
}

/**
 * Fails pending tasks whose expiry (next_attempt_at) has come, through the pending index.
 * $1 now, $2 limit, $3 last_error.
 */
export function expirePendingSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `WITH expired AS (
  SELECT id FROM ${s}.tasks
  WHERE status = 'pending' AND next_attempt_at <= $1::timestamptz
  ORDER BY next_attempt_at, id
  LIMIT $2
  FOR UPDATE SKIP LOCKED
)
UPDATE ${s}.tasks AS t
SET status = 'failed', next_attempt_at = NULL, last_error = $3, updated_at = GREATEST(t.updated_at, $1::timestamptz)
FROM expired
WHERE t.id = expired.id AND t.status = 'pending'
RETURNING ${taskColumns
    .split(',')
    .map((column) => `t.${column.trim()}`)
    .join(', ')}`
}

/** $1 idempotency_key. */
export function selectTaskByIdempotencyKeySql(schema: string): string {
  return `SELECT ${taskColumns} FROM ${quoteIdentifier(schema)}.tasks WHERE idempotency_key = $1`
}

/** $1 id. */
export function selectTaskSql(schema: string): string {
  return `SELECT ${taskColumns} FROM ${quoteIdentifier(schema)}.tasks WHERE id = $1`
}

/**
 * $1 id, $2 body, $3 content_type, $4 now, $5 lease expiry, $6 token, $7 due channel.
 * When the task's destination is held back at $4 (as a limited claim would skip it), the task is
 * made `scheduled`, due at $4, unleased, and announced (`held` true); otherwise it is leased.
 */
export function attachSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `WITH held AS (
  SELECT EXISTS (
    SELECT 1 FROM ${s}.destinations AS d
    WHERE d.destination = t.destination AND (d.until > $4::timestamptz OR d.state IN ('open', 'probing'))
  ) AS held
  FROM ${s}.tasks AS t WHERE t.id = $1 AND t.status = 'pending'
), attached AS (
  UPDATE ${s}.tasks AS t
  SET status = CASE WHEN h.held THEN 'scheduled' ELSE 'delivering' END, body = $2, content_type = $3,
      next_attempt_at = CASE WHEN h.held THEN $4::timestamptz ELSE $5::timestamptz END,
      lease_token = CASE WHEN h.held THEN NULL ELSE $6 END,
      leased_at = CASE WHEN h.held THEN NULL ELSE $4::timestamptz END, updated_at = $4::timestamptz
  FROM held AS h
  WHERE t.id = $1 AND t.status = 'pending'
  RETURNING h.held, ${taskColumns
    .split(',')
    .map((column) => `t.${column.trim()}`)
    .join(', ')}
)
SELECT *, CASE WHEN held THEN pg_notify($7, (extract(epoch FROM next_attempt_at) * 1000)::bigint::text)::text END AS notified
FROM attached`
}

/**
 * $1 now, $2 limit, $3 lease expiry, $4 token prefix (each task's token is prefix:id).
 * `SKIP LOCKED` lets many workers claim side by side without waiting on each other's rows; the
 * WHERE clause matches the partial index's predicate so the planner uses it.
 */
export function claimSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `WITH due AS (
  SELECT id, next_attempt_at AS due_at FROM ${s}.tasks
  WHERE status IN ('scheduled', 'delivering') AND next_attempt_at <= $1::timestamptz
  ORDER BY next_attempt_at, id
  LIMIT $2
  FOR UPDATE SKIP LOCKED
)
UPDATE ${s}.tasks AS t
SET status = 'delivering', next_attempt_at = $3::timestamptz, lease_token = $4 || ':' || t.id,
    leased_at = $1::timestamptz, updated_at = $1::timestamptz
FROM due
WHERE t.id = due.id
RETURNING due.due_at, ${taskColumns
    .split(',')
    .map((column) => `t.${column.trim()}`)
    .join(', ')}`
}

/**
 * Records the attempt and applies the resolution only while the token holds, in one statement.
 * $1 id, $2 token, $3 status, $4 next_attempt_at, $5 last_error (null keeps the old one),
 * $6 updated_at, $7 attempt, $8 started_at, $9 duration_ms, $10 http status, $11 error,
 * $12 response_body, $13 outcome, $14 due channel.
 * A retry wakes listeners, who decide by the payload whether it is due yet.
 */
export function completeSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `WITH done AS (
  UPDATE ${s}.tasks
  SET status = $3, attempts = attempts + 1, next_attempt_at = $4::timestamptz,
      last_error = CASE WHEN $3 = 'delivered' THEN NULL ELSE COALESCE($5, last_error) END,
      lease_token = NULL, leased_at = NULL, updated_at = GREATEST(updated_at, $6::timestamptz)
  WHERE id = $1 AND lease_token = $2 AND status = 'delivering'
  RETURNING id, status, next_attempt_at, destination
), recorded AS (
  INSERT INTO ${s}.attempts (task_id, attempt, started_at, duration_ms, status, error, response_body, outcome)
  SELECT id, $7, $8::timestamptz, $9, $10, $11, $12, $13 FROM done
), answered AS (
  SELECT destination, 1 AS n, $6::timestamptz AS at FROM done WHERE $10::int < 500 AND $10::int <> 408 AND destination IS NOT NULL
)${tallyAnswersSql(s)}
SELECT count(*)::int AS completed,
  max(pg_notify($14, (extract(epoch FROM next_attempt_at) * 1000)::bigint::text)::text)
    FILTER (WHERE status = 'scheduled') AS notified
FROM done`
}

/**
 * The part of a completion that counts answers (`answered`: destination, n, at) toward the
 * destinations with a failure tally: in a row back to 0, `n` more attempts, or the tally dropped
 * once its window is over. A destination without a tally (one that never failed) writes nothing.
 */
function tallyAnswersSql(s: string): string {
  // Locked in the order of their names first, so two workers' batches answering for the same
  // destinations wait for each other instead of deadlocking.
  return `, tallied AS (
  SELECT d.destination FROM ${s}.destination_tallies AS d
  WHERE d.destination IN (SELECT destination FROM answered)
  ORDER BY d.destination
  FOR UPDATE
), counted AS (
  UPDATE ${s}.destination_tallies AS d SET in_a_row = 0, attempts = d.attempts + a.n
  FROM answered AS a WHERE d.destination = a.destination AND d.window_ends > a.at
    AND d.destination IN (SELECT destination FROM tallied)
), forgotten AS (
  DELETE FROM ${s}.destination_tallies AS d
  USING answered AS a WHERE d.destination = a.destination AND d.window_ends <= a.at
    AND d.destination IN (SELECT destination FROM tallied)
)`
}

/**
 * {@link completeSql} for many leases at once, each column an array with one element per lease:
 * one statement and one commit for every completion that arrived while the previous one was in
 * flight (group commit). Each row is still fenced by its own token and records its own attempt.
 * $1 id, $2 token, $3 status, $4 next_attempt_at, $5 last_error, $6 updated_at, $7 attempt,
 * $8 started_at, $9 duration_ms, $10 http status, $11 error, $12 response_body, $13 outcome,
 * $14 due channel. Returns the positions (1-based) of the completions that held their lease.
 * Listeners are woken once, with the earliest retry of the batch.
 */
export function completeBatchSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `WITH input AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::timestamptz[],
    $7::int[], $8::timestamptz[], $9::float8[], $10::int[], $11::text[], $12::text[], $13::text[])
    WITH ORDINALITY AS i (id, token, status, next_attempt_at, last_error, updated_at,
      attempt, started_at, duration_ms, http_status, error, response_body, outcome, position)
), done AS (
  UPDATE ${s}.tasks AS t
  SET status = i.status, attempts = t.attempts + 1, next_attempt_at = i.next_attempt_at,
      last_error = CASE WHEN i.status = 'delivered' THEN NULL ELSE COALESCE(i.last_error, t.last_error) END,
      lease_token = NULL, leased_at = NULL,
      updated_at = GREATEST(t.updated_at, i.updated_at)
  FROM input AS i
  WHERE t.id = i.id AND t.lease_token = i.token AND t.status = 'delivering'
  RETURNING i.position, t.status, t.next_attempt_at, t.destination
), recorded AS (
  INSERT INTO ${s}.attempts (task_id, attempt, started_at, duration_ms, status, error, response_body, outcome)
  SELECT i.id, i.attempt, i.started_at, i.duration_ms, i.http_status, i.error, i.response_body, i.outcome
  FROM done JOIN input AS i USING (position)
  ORDER BY i.position
), answered AS (
  SELECT done.destination, count(*)::int AS n, max(i.updated_at) AS at
  FROM done JOIN input AS i USING (position)
  WHERE i.http_status < 500 AND i.http_status <> 408 AND done.destination IS NOT NULL
  GROUP BY done.destination
)${tallyAnswersSql(s)}
SELECT array_agg(position)::int[] AS completed,
  CASE WHEN bool_or(status = 'scheduled') THEN
    pg_notify($14, (extract(epoch FROM min(next_attempt_at) FILTER (WHERE status = 'scheduled')) * 1000)::bigint::text)::text
  END AS notified
FROM done`
}

/**
 * Whether a completion committed although its answer was lost: its attempt is in the history.
 * $1 task id, $2 attempt number, $3 started_at.
 */
export function attemptRecordedSql(schema: string): string {
  return `SELECT 1 AS recorded FROM ${quoteIdentifier(schema)}.attempts
WHERE task_id = $1 AND attempt = $2 AND started_at = $3::timestamptz LIMIT 1`
}

/** $1 id, $2 token, $3 next_attempt_at (null: the instant the lease was taken), $4 due channel. */
export function releaseSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `WITH released AS (
  UPDATE ${s}.tasks
  SET status = 'scheduled', next_attempt_at = COALESCE($3::timestamptz, leased_at, updated_at),
      lease_token = NULL, leased_at = NULL
  WHERE id = $1 AND lease_token = $2 AND status = 'delivering'
  RETURNING next_attempt_at
)
SELECT count(*)::int AS released,
  max(pg_notify($4, (extract(epoch FROM next_attempt_at) * 1000)::bigint::text)::text) AS notified
FROM released`
}

/** $1 id, $2 updated_at. Voids any lease, so its holder's completion is refused. */
export function cancelSql(schema: string): string {
  return `UPDATE ${quoteIdentifier(schema)}.tasks
SET status = 'cancelled', next_attempt_at = NULL, lease_token = NULL, leased_at = NULL,
    updated_at = GREATEST(updated_at, $2::timestamptz)
WHERE id = $1 AND status IN ('pending', 'scheduled', 'delivering')
RETURNING id`
}

/** $1 task id. Oldest first. */
export function selectAttemptsSql(schema: string): string {
  return `SELECT attempt, started_at, duration_ms, status, error, response_body, outcome
FROM ${quoteIdentifier(schema)}.attempts WHERE task_id = $1 ORDER BY id`
}

/**
 * Deletes one batch of finished tasks (their attempts go with them).
 * $1 statuses (text[]), $2 cutoff, $3 batch size.
 */
export function pruneSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `WITH batch AS (
  SELECT id FROM ${s}.tasks
  WHERE status IN ('delivered', 'failed', 'cancelled') AND status = ANY($1::text[]) AND updated_at < $2::timestamptz
  LIMIT $3
)
DELETE FROM ${s}.tasks AS t USING batch WHERE t.id = batch.id`
}

// ---- inspection ---------------------------------------------------------------------------------

/** Which filters a search has; the values go in the order {@link searchTasksSql} numbers them. */
export interface SearchShape {
  /** A validated `TaskStatus`, written into the text so the planner can use the partial indexes. */
  status?: string | undefined
  event: boolean
  host: boolean
  id: boolean
  idempotencyKey: boolean
  since: boolean
  until: boolean
  after: boolean
}

/**
 * A page of tasks matching the filters `shape` has, newest first. Only the filters given are in
 * the text, so the planner picks the index of the most selective one. Parameters, numbered in this
 * order for the filters present: event, host, id, idempotency key, since, until, the cursor's
 * updated_at and id; the limit last.
 */
export function searchTasksSql(schema: string, shape: SearchShape): string {
  const where: string[] = []
  let n = 0
  if (shape.status !== undefined) where.push(`status = '${shape.status}'`)
  if (shape.event) where.push(`event = $${++n}`)
  if (shape.host) where.push(`${callbackHostSql} = $${++n}`)
  if (shape.id) where.push(`id = $${++n}`)
  if (shape.idempotencyKey) where.push(`idempotency_key = $${++n}`)
  if (shape.since) where.push(`updated_at >= $${++n}::timestamptz`)
  if (shape.until) where.push(`updated_at < $${++n}::timestamptz`)
  if (shape.after) where.push(`(updated_at, id) < ($${++n}::timestamptz, $${++n}::text)`)
  return `SELECT ${taskColumns} FROM ${quoteIdentifier(schema)}.tasks
${where.length === 0 ? '' : `WHERE ${where.join('\n  AND ')}\n`}ORDER BY updated_at DESC, id DESC
LIMIT $${++n}`
}

/** $1 id, $2 now, $3 due channel. A failed task becomes due at once; its history stays. */
export function redeliverSql(schema: string): string {
  return `WITH redelivered AS (
  UPDATE ${quoteIdentifier(schema)}.tasks
  SET status = 'scheduled', next_attempt_at = $2::timestamptz, lease_token = NULL, leased_at = NULL,
      updated_at = GREATEST(updated_at, $2::timestamptz)
  WHERE id = $1 AND status = 'failed'
  RETURNING next_attempt_at
)
SELECT count(*)::int AS redelivered,
  max(pg_notify($3, (extract(epoch FROM next_attempt_at) * 1000)::bigint::text)::text) AS notified
FROM redelivered`
}

/** $1 now. The same predicate as a claim, so it counts through the due index. */
export function countDueSql(schema: string): string {
  return `SELECT count(*)::int AS due FROM ${quoteIdentifier(schema)}.tasks
WHERE status IN ('scheduled', 'delivering') AND next_attempt_at <= $1::timestamptz`
}

// ---- the inspector's overview ------------------------------------------------------------------

/** $1 cap. Per status, counted through the status index and stopped at the cap. */
export function summaryCountsSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `SELECT s.status, (SELECT count(*) FROM (SELECT 1 FROM ${s}.tasks AS t WHERE t.status = s.status LIMIT $1) AS capped)::int AS count
FROM unnest(ARRAY['pending', 'scheduled', 'delivering', 'delivered', 'failed', 'cancelled']) AS s (status)`
}

/**
 * $1 the schema's name. About how many tasks each status has, from the planner's statistics
 * (ANALYZE, autovacuum): no row is read. None before the table was first analysed.
 */
export function summaryEstimatesSql(schema: string): string {
  return `SELECT v.status, round(c.reltuples * v.freq)::bigint AS estimate
FROM pg_class AS c, pg_stats AS st,
  unnest(st.most_common_vals::text::text[], st.most_common_freqs) AS v (status, freq)
WHERE c.oid = '${quoteIdentifier(schema).replaceAll("'", "''")}.tasks'::regclass AND c.reltuples > 0
  AND st.schemaname = $1 AND st.tablename = 'tasks' AND st.attname = 'status'`
}

/** $1 now, $2 cap. The due backlog (capped) and its oldest due instant, through the due index. */
export function summaryDueSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `SELECT (SELECT count(*) FROM (SELECT 1 FROM ${s}.tasks
    WHERE status IN ('scheduled', 'delivering') AND next_attempt_at <= $1::timestamptz LIMIT $2) AS capped)::int AS due,
  (SELECT min(next_attempt_at) FROM ${s}.tasks
    WHERE status IN ('scheduled', 'delivering') AND next_attempt_at <= $1::timestamptz) AS oldest`
}

/**
 * $1 now, $2 bucket ms, $3 buckets. Attempts per bucket counted back from now (0: the last, up to
 * and including now). One small range count per bucket from the index that carries the outcome:
 * several times quicker than grouping every row by a computed bucket.
 */
export function summaryAttemptsSql(schema: string): string {
  return `SELECT b.i AS bucket, c.delivered, c.failed
FROM generate_series(0, $3::int - 1) AS b (i),
LATERAL (
  SELECT count(*) FILTER (WHERE outcome = 'delivered')::int AS delivered,
    count(*) FILTER (WHERE outcome <> 'delivered')::int AS failed
  FROM ${quoteIdentifier(schema)}.attempts
  WHERE started_at > $1::timestamptz - (b.i + 1) * $2::float8 * interval '1 millisecond'
    AND started_at <= $1::timestamptz - b.i * $2::float8 * interval '1 millisecond'
) AS c`
}

/** $1 since, $2 how many hosts. Tasks whose last attempt failed, by callback host. */
export function summaryFailingHostsSql(schema: string): string {
  return `SELECT ${callbackHostSql} AS host, count(*)::int AS tasks,
  (array_agg(last_error ORDER BY updated_at DESC))[1] AS last_error, max(updated_at) AS last_failed_at
FROM ${quoteIdentifier(schema)}.tasks
WHERE status IN ('failed', 'scheduled') AND last_error IS NOT NULL AND updated_at >= $1::timestamptz
GROUP BY 1
ORDER BY tasks DESC, last_failed_at DESC
LIMIT $2`
}

// ---- destinations -------------------------------------------------------------------------------

/**
 * A claim that limits destinations (see `CallbackStore.claim` with `perDestination`).
 * $1 now, $2 limit, $3 lease expiry, $4 token prefix, $5 perDestination, $6 the caller's attempts
 * in flight per destination (a JSON object). It looks at the earliest due tasks of destinations
 * neither held back nor at the caller's cap (those are left out before the scan, so a dead
 * destination's backlog costs nothing), ranks each destination's tasks among a few times `limit`
 * of them, and takes those within the destination's room.
 * A probe of an open breaker is leased only if this claim is the one that moved its destination
 * to `probing`: two workers claiming at once cannot both probe. Up to three times each
 * destination's room is chosen and locked with `SKIP LOCKED` (a window function cannot be), and
 * the room is taken from the rows that could be locked, so claims side by side pass over each
 * other's rows instead of coming back empty.
 */
export function claimLimitedSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `WITH held AS (
  SELECT destination FROM ${s}.destinations WHERE until > $1::timestamptz
), probe AS (
  SELECT destination, openings FROM ${s}.destinations WHERE state IN ('open', 'probing') AND until <= $1::timestamptz
), busy AS (
  SELECT key AS destination, value::int AS n FROM json_each_text($6::json)
), candidates AS (
  SELECT id, destination, next_attempt_at, (deadline IS NOT NULL AND deadline < $1::timestamptz) AS expired
  FROM ${s}.tasks
  WHERE status IN ('scheduled', 'delivering') AND next_attempt_at <= $1::timestamptz
    AND (destination IS NULL OR deadline < $1::timestamptz OR (
      destination NOT IN (SELECT destination FROM held)
      AND destination NOT IN (SELECT destination FROM busy WHERE n >= $5::int)))
  ORDER BY next_attempt_at, id
  LIMIT 4 * $2 + 100
), ranked AS (
  SELECT c.*, row_number() OVER (PARTITION BY c.destination, c.expired ORDER BY c.next_attempt_at, c.id) AS rank
  FROM candidates AS c
), chosen AS (
  -- up to three times each destination's room, so rows that another claim holds can be passed over
  SELECT r.id, r.next_attempt_at AS due_at, r.destination, r.expired,
    (p.destination IS NOT NULL AND NOT r.expired) AS probe, p.openings AS probe_openings,
    CASE WHEN r.expired OR r.destination IS NULL THEN NULL
      WHEN p.destination IS NULL THEN $5::int - COALESCE(b.n, 0)
      ELSE 1 - GREATEST(COALESCE(b.n, 0), 0) END AS room
  FROM ranked AS r
  LEFT JOIN busy AS b ON b.destination = r.destination
  LEFT JOIN probe AS p ON p.destination = r.destination
  WHERE r.expired OR r.destination IS NULL
    OR r.rank <= 3 * (CASE WHEN p.destination IS NULL THEN $5::int - COALESCE(b.n, 0) ELSE 1 - GREATEST(COALESCE(b.n, 0), 0) END)
  ORDER BY r.next_attempt_at, r.id
  LIMIT 3 * $2
), locked AS (
  SELECT t.id FROM ${s}.tasks AS t
  WHERE t.id IN (SELECT id FROM chosen) AND t.status IN ('scheduled', 'delivering') AND t.next_attempt_at <= $1::timestamptz
  FOR UPDATE SKIP LOCKED
), picked AS (
  SELECT c.*, row_number() OVER (PARTITION BY c.destination, c.expired ORDER BY c.due_at, c.id) AS taken
  FROM chosen AS c WHERE c.id IN (SELECT id FROM locked)
), final AS (
  SELECT * FROM picked WHERE room IS NULL OR taken <= room ORDER BY due_at, id LIMIT $2
), probed AS (
  UPDATE ${s}.destinations AS d SET state = 'probing', until = $3::timestamptz, updated_at = $1::timestamptz
  FROM final
  WHERE final.probe AND d.destination = final.destination
    AND d.state IN ('open', 'probing') AND d.until <= $1::timestamptz
  RETURNING d.destination
), claimed AS (
  UPDATE ${s}.tasks AS t
  SET status = 'delivering', next_attempt_at = $3::timestamptz, lease_token = $4 || ':' || t.id,
      leased_at = $1::timestamptz, updated_at = $1::timestamptz
  FROM final
  WHERE t.id = final.id
    AND (NOT final.probe OR final.destination IN (SELECT destination FROM probed))
  RETURNING final.due_at, final.probe, final.probe_openings, ${taskColumns
    .split(',')
    .map((column) => `t.${column.trim()}`)
    .join(', ')}
)
-- A probe another claim took comes back with no task (id NULL): the caller may claim again.
SELECT claimed.* FROM final LEFT JOIN claimed ON claimed.id = final.id`
}

/**
 * The cheap first try of a limited claim, for the common case: the earliest due tasks whose
 * destination is not held back, not on probation and not at the caller's cap, read and locked
 * through the due index in one pass (`SKIP LOCKED`), with no ranking of the backlog. Of what it
 * locked, each destination keeps only its room; the rest stays due, in its place (the locks end
 * with the statement). Same parameters as {@link claimLimitedSql}. It always returns one row at
 * least (`id` NULL when it leased nothing), each saying how many rows it locked (`locked`) and
 * whether a destination waits for its probe (`probes`): when a destination had more due than its
 * room (other destinations' tasks may wait behind them) or a probe waits, the caller runs
 * {@link claimLimitedSql} for the rest of `limit`.
 */
export function claimQuickSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `WITH busy AS (
  SELECT key AS destination, value::int AS n FROM json_each_text($6::json)
), due AS (
  SELECT id, destination, next_attempt_at AS due_at, (deadline IS NOT NULL AND deadline < $1::timestamptz) AS expired
  FROM ${s}.tasks
  WHERE status IN ('scheduled', 'delivering') AND next_attempt_at <= $1::timestamptz
    AND (destination IS NULL OR deadline < $1::timestamptz OR (
      destination NOT IN (SELECT destination FROM ${s}.destinations WHERE until > $1::timestamptz OR state IN ('open', 'probing'))
      AND destination NOT IN (SELECT destination FROM busy WHERE n >= $5::int)))
  ORDER BY next_attempt_at, id
  LIMIT $2
  FOR UPDATE SKIP LOCKED
), picked AS (
  SELECT d.*, row_number() OVER (PARTITION BY d.destination, d.expired ORDER BY d.due_at, d.id) AS taken,
    CASE WHEN d.expired OR d.destination IS NULL THEN NULL ELSE $5::int - COALESCE(b.n, 0) END AS room
  FROM due AS d LEFT JOIN busy AS b ON b.destination = d.destination
), claimed AS (
  UPDATE ${s}.tasks AS t
SET status = 'delivering', next_attempt_at = $3::timestamptz, lease_token = $4 || ':' || t.id,
    leased_at = $1::timestamptz, updated_at = $1::timestamptz
FROM picked
WHERE t.id = picked.id AND (picked.room IS NULL OR picked.taken <= picked.room)
RETURNING picked.due_at, ${taskColumns
    .split(',')
    .map((column) => `t.${column.trim()}`)
    .join(', ')}
)
SELECT (SELECT count(*) FROM picked)::int AS locked,
  EXISTS (SELECT 1 FROM ${s}.destinations WHERE state IN ('open', 'probing') AND until <= $1::timestamptz) AS probes,
  claimed.*
FROM (SELECT 1) AS one LEFT JOIN claimed ON true`
}

/** $1 destination, $2 state, $3 until, $4 reason, $5 openings, $6 now. Drops its failure tally: counting starts afresh. */
export function holdDestinationSql(schema: string): string {
  return `WITH untallied AS (DELETE FROM ${quoteIdentifier(schema)}.destination_tallies WHERE destination = $1)
INSERT INTO ${quoteIdentifier(schema)}.destinations (destination, state, until, reason, openings, updated_at)
VALUES ($1, $2, $3::timestamptz, $4, $5, $6::timestamptz)
ON CONFLICT (destination) DO UPDATE
SET state = EXCLUDED.state, until = EXCLUDED.until, reason = EXCLUDED.reason, openings = EXCLUDED.openings,
    updated_at = EXCLUDED.updated_at`
}

/** $1 destination. A healthy destination has no row. Its failure tally goes too: counting starts afresh. */
export function clearDestinationSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `WITH untallied AS (DELETE FROM ${s}.destination_tallies WHERE destination = $1)
DELETE FROM ${s}.destinations WHERE destination = $1`
}

/**
 * Counts a failed attempt of a destination for every worker (see `CallbackStore.countDestinationFailure`).
 * $1 destination, $2 now, $3 the end of a window starting now.
 */
export function countDestinationFailureSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `INSERT INTO ${s}.destination_tallies AS d (destination, in_a_row, attempts, failures, window_ends)
VALUES ($1, 1, 1, 1, $3::timestamptz)
ON CONFLICT (destination) DO UPDATE
SET in_a_row = d.in_a_row + 1,
    attempts = CASE WHEN d.window_ends <= $2::timestamptz THEN 1 ELSE d.attempts + 1 END,
    failures = CASE WHEN d.window_ends <= $2::timestamptz THEN 1 ELSE d.failures + 1 END,
    window_ends = CASE WHEN d.window_ends <= $2::timestamptz THEN $3::timestamptz ELSE d.window_ends END
RETURNING in_a_row, attempts, failures`
}

/** $1 now. Destinations held back, with attempts in flight or with tasks due; most due first. */
export function listDestinationsSql(schema: string): string {
  const s = quoteIdentifier(schema)
  return `WITH due AS (
  SELECT destination, count(*)::int AS due FROM ${s}.tasks
  WHERE status IN ('scheduled', 'delivering') AND next_attempt_at <= $1::timestamptz AND destination IS NOT NULL
  GROUP BY destination
), busy AS (
  SELECT destination, count(*)::int AS in_flight FROM ${s}.tasks
  WHERE status = 'delivering' AND next_attempt_at > $1::timestamptz AND destination IS NOT NULL
  GROUP BY destination
), names AS (
  SELECT destination FROM due UNION SELECT destination FROM busy UNION SELECT destination FROM ${s}.destinations
)
SELECT n.destination, d.state, d.until, d.openings, d.reason,
  COALESCE(due.due, 0) AS due, COALESCE(busy.in_flight, 0) AS in_flight
FROM names AS n
LEFT JOIN due USING (destination)
LEFT JOIN busy USING (destination)
LEFT JOIN ${s}.destinations AS d USING (destination)
ORDER BY COALESCE(due.due, 0) DESC, n.destination
LIMIT 1000`
}

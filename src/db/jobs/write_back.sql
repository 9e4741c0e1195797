-- The fenced write-back of a batch of finished jobs (one entry per job, numbered from 1 in the
-- order given). Sent by `db::jobs::write_back`; its parameters are filled by the structs in
-- `db/jobs/write_back.rs`, each of which names the `$n` it fills:
--   $1–$11   the fence of every entry (`Fence`)
--   $12–$23  meetings that exist at their platform (`Meetings`)
--   $24      entries that deleted the recorded meeting but end otherwise (`Writes::removed`)
--   $25–$26  entries that need no meeting (`Unlinked`)
--   $27      entries that retry (`Writes::retrying`)
--   $28–$29  entries that failed (`Failures`)
--   $30      the audit actor
--   $31–$38  audit lines (`Audit`)
--   $39–$43  events for the app (`Events`)
-- It returns one row per entry it took: `entry`, and `current` (NULL: the lease was lost).
--
-- Two placeholders (each name in double braces) are substituted once, at first use, for the
-- variants; this header is dropped then too:
--   booking_lock  how the bookings are locked: `FOR NO KEY UPDATE` (waiting, a job recorded
--                 on its own) or `FOR NO KEY UPDATE SKIP LOCKED` (a batch, which never waits)
--   booking_join  whether a job whose booking was not locked is still fenced (`LEFT JOIN`:
--                 only a deleted booking can be missing) or left out (`JOIN`)
-- The CTEs between the `other_outcomes` markers write what only unlinked, retrying and failed
-- entries and removed meetings need ($24–$29). A batch with none of those (every entry linked,
-- unchanged or deferred) is sent without them, $24–$29 only typed: the server starts no plan
-- nodes for them, a quarter of the statement's cost for a job recorded on its own.
--
-- `fenced` ends the claims that still hold (a claim is spent by its write-back) and says which
-- are current (the booking is still at the version the job read). What exists at the platform
-- is recorded for every fenced job, even when its booking moved on meanwhile: the next run must
-- know about that meeting to move or delete it. The booking shows the result, and the app is
-- told, only for current jobs. Data-modifying CTEs all see the statement's snapshot, never one
-- another's rows: each write therefore takes its own rows and keeps those of the fenced entries.
-- Writes name their entry (its place in the batch), not their booking: a daemon can hold a lost
-- claim and its successor on the same job at once, and only the current claim's rows count.
--
-- Every update finds its rows through `key = ANY (array)`, an index condition whatever the
-- plan: the generic plan is kept per connection, made from the statistics of the moment it is
-- made (a table that was nearly empty then would otherwise be walked whole through its index).
-- A recorded meeting replaces the booking's previous one; `linked_at` keeps its time while the
-- same meeting stays live.
WITH f AS (
    SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::bigint[], $4::uuid[], $5::bigint[], $6::text[],
                         $7::float8[], $8::text[], $9::bool[], $10::text[], $11::int[]) WITH ORDINALITY
             AS f(job_id, booking_id, claim_seq, token, version, state, delay, last_error, refund, rplatform,
                  rgeneration, entry)
), locked AS (
    SELECT b.id FROM bookings b WHERE b.id = ANY ($2::uuid[]) ORDER BY b.id {{booking_lock}}
), fenced AS (
    UPDATE meetingd.jobs j
       SET state = CASE WHEN j.version = f.version THEN f.state ELSE 'pending' END,
           run_at = CASE WHEN j.version = f.version THEN now() + make_interval(secs => f.delay) ELSE now() END,
           last_error = CASE WHEN j.version = f.version AND NOT f.refund THEN f.last_error ELSE j.last_error END,
           attempts = CASE WHEN f.refund THEN GREATEST(j.attempts - 1, 0) ELSE j.attempts END,
           completed_at = CASE WHEN j.version = f.version AND f.state <> 'pending' THEN clock_timestamp() END,
           lease_owner = NULL, lease_until = NULL, lease_token = NULL, updated_at = now(),
           intent_platform = CASE WHEN j.intent_platform = f.rplatform AND j.intent_generation = f.rgeneration
                                  THEN NULL ELSE j.intent_platform END
      FROM f {{booking_join}} locked l ON l.id = f.booking_id
     WHERE j.id = ANY ($1::bigint[]) AND j.id = f.job_id AND j.claim_seq = f.claim_seq AND j.lease_token = f.token
 RETURNING f.entry, j.booking_id, j.version = f.version AS current
), linked AS (
    SELECT fd.booking_id, fd.current, x.*
      FROM unnest($12::bigint[], $13::text[], $14::text[], $15::text[], $16::text[], $17::timestamptz[],
                  $18::timestamptz[], $19::int[], $20::jsonb[], $21::uuid[], $22::uuid[], $23::text[])
           AS x(entry, platform, requested_platform, external_id, join_url, start_time, end_time, generation, settings,
                owner_id, integration_id, account)
      JOIN fenced fd ON fd.entry = x.entry
), recorded AS (
    INSERT INTO meetingd.meetings AS m
        (booking_id, platform, requested_platform, external_id, join_url, start_time, end_time, generation, state,
         owner_id, integration_id, account)
    SELECT booking_id, platform, requested_platform, external_id, join_url, start_time, end_time, generation, 'live',
           owner_id, integration_id, account
      FROM linked ON CONFLICT (booking_id) DO UPDATE
    SET platform = EXCLUDED.platform, requested_platform = EXCLUDED.requested_platform,
        external_id = EXCLUDED.external_id, join_url = EXCLUDED.join_url,
        start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time,
        generation = EXCLUDED.generation, state = 'live', updated_at = now(),
        owner_id = EXCLUDED.owner_id, integration_id = EXCLUDED.integration_id, account = EXCLUDED.account,
        linked_at = CASE WHEN m.external_id = EXCLUDED.external_id AND m.state = 'live'
                         THEN m.linked_at ELSE clock_timestamp() END
), shown AS (
    -- Only over a link meetingd wrote (or none): a link the app or the provider set meanwhile
    -- is theirs, and the next run treats the booking as manual. The recorded meeting is read by
    -- `meetingd.link_is_ours` and correlated subqueries: index lookups in any plan, like every
    -- `= ANY` here. A booking showing no link, or this one, needs no look-up: the server plans
    -- `link_is_ours` (a SQL function it cannot inline) anew in every statement that calls it.
    UPDATE bookings b
       SET meeting_link = x.join_url, meeting_id = x.external_id, meeting_platform = x.platform,
           meeting_settings = x.settings, meeting_status = 'ready', meeting_error = NULL
      FROM linked x
     WHERE b.id = ANY (ARRAY(SELECT booking_id FROM linked WHERE current)) AND b.id = x.booking_id AND x.current
       AND b.meeting_status IS DISTINCT FROM 'manual'
       AND (COALESCE(b.meeting_link::text, '') IN ('', x.join_url) OR meetingd.link_is_ours(b.id, b.meeting_link::text))
-- {{other_outcomes:begin}}
), unlinked AS (
    SELECT fd.booking_id, fd.current, x.deleted
      FROM unnest($25::bigint[], $26::bool[]) AS x(entry, deleted)
      JOIN fenced fd ON fd.entry = x.entry
), gone AS (
    -- The recorded meeting was deleted by a run whose outcome is not `Unlinked` (a replacement
    -- whose create failed, an update that found it deleted): recorded as deleted all the same.
    SELECT fd.booking_id, fd.current, fd.entry
      FROM fenced fd WHERE fd.entry = ANY ($24::bigint[])
), removed AS (
    UPDATE meetingd.meetings SET state = 'deleted', updated_at = now()
     WHERE booking_id = ANY (ARRAY(SELECT booking_id FROM unlinked WHERE deleted) || ARRAY(SELECT booking_id FROM gone))
), cleared AS (
    -- A manual link is the provider's own: it stays, and so does a link the app wrote itself
    -- (the booking is then marked manual). A booking that never had meeting state (confirmed,
    -- then cancelled before any work) is left as it is: no meeting at all.
    UPDATE bookings b
       SET meeting_link = CASE WHEN meetingd.link_is_ours(b.id, b.meeting_link::text) THEN NULL ELSE b.meeting_link END,
           meeting_id = CASE WHEN meetingd.link_is_ours(b.id, b.meeting_link::text) THEN NULL ELSE b.meeting_id END,
           meeting_error = NULL,
           meeting_status = CASE WHEN meetingd.link_is_ours(b.id, b.meeting_link::text) THEN 'deleted' ELSE 'manual' END
      FROM unlinked x
     WHERE b.id = ANY (ARRAY(SELECT booking_id FROM unlinked WHERE current)) AND b.id = x.booking_id AND x.current
       AND b.meeting_status IS DISTINCT FROM 'manual' AND (x.deleted OR b.meeting_status IS NOT NULL)
), retrying AS (
    -- A booking whose meeting was deleted on the way shows no dead link while it waits.
    UPDATE bookings b
       SET meeting_status = 'pending',
           meeting_link = CASE WHEN r.removed AND meetingd.link_is_ours(b.id, b.meeting_link::text)
                               THEN NULL ELSE b.meeting_link END,
           meeting_id = CASE WHEN r.removed AND meetingd.link_is_ours(b.id, b.meeting_link::text)
                             THEN NULL ELSE b.meeting_id END
      FROM (SELECT fd.booking_id, fd.entry = ANY ($24::bigint[]) AS removed
              FROM fenced fd WHERE fd.current AND fd.entry = ANY ($27::bigint[])) r
     WHERE b.id = ANY (ARRAY(SELECT booking_id FROM fenced WHERE current AND entry = ANY ($27::bigint[])))
       AND b.id = r.booking_id
       AND (b.meeting_status IS DISTINCT FROM 'pending' OR (r.removed AND b.meeting_link IS NOT NULL))
       AND b.meeting_status IS DISTINCT FROM 'manual'
       AND b.status::text = 'confirmed'
), failing AS (
    SELECT fd.booking_id, x.error, fd.entry = ANY ($24::bigint[]) AS removed
      FROM unnest($28::bigint[], $29::text[]) AS x(entry, error)
      JOIN fenced fd ON fd.entry = x.entry AND fd.current
), failed AS (
    UPDATE bookings b
       SET meeting_status = 'failed', meeting_error = x.error,
           meeting_link = CASE WHEN x.removed AND meetingd.link_is_ours(b.id, b.meeting_link::text)
                               THEN NULL ELSE b.meeting_link END,
           meeting_id = CASE WHEN x.removed AND meetingd.link_is_ours(b.id, b.meeting_link::text)
                             THEN NULL ELSE b.meeting_id END
      FROM failing x
     WHERE b.id = ANY (ARRAY(SELECT booking_id FROM failing)) AND b.id = x.booking_id
       AND b.meeting_status IS DISTINCT FROM 'manual'
-- {{other_outcomes:end}}
), audited AS (
    -- In the order given, so a booking's trail reads in the order things happened.
    INSERT INTO meetingd.audit_log (actor, action, booking_id, user_id, platform, outcome, attempt, duration_ms, detail)
    SELECT $30, x.action, fd.booking_id, x.user_id, x.platform, x.outcome, x.attempt, x.duration_ms, x.detail
      FROM unnest($31::bigint[], $32::text[], $33::uuid[], $34::text[], $35::text[], $36::int[], $37::int[],
                  $38::text[])
           WITH ORDINALITY AS x(entry, action, user_id, platform, outcome, attempt, duration_ms, detail, n)
      JOIN fenced fd ON fd.entry = x.entry
     ORDER BY x.n
), told AS (
    INSERT INTO meetingd.events (kind, user_id, booking_id, platform, message)
    SELECT x.kind, x.user_id, fd.booking_id, x.platform, x.message
      FROM unnest($39::bigint[], $40::text[], $41::uuid[], $42::text[], $43::text[])
           WITH ORDINALITY AS x(entry, kind, user_id, platform, message, n)
      JOIN fenced fd ON fd.entry = x.entry AND fd.current
     ORDER BY x.n
)
SELECT f.entry, fenced.current
  FROM f {{booking_join}} locked l ON l.id = f.booking_id
  LEFT JOIN fenced ON fenced.entry = f.entry

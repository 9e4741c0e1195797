-- The claim: takes up to $1 due jobs for daemon $2 with a lease of $3 seconds on the database
-- clock, and reads each job's booking, service, people, integration and recorded meeting in the
-- same statement. Sent by `db::jobs::claim`, read back by column name (`snapshot_of`).
-- This header is dropped before the statement is sent.
--
-- The CTE takes the due jobs (a CTE, not `WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP
-- LOCKED)`, which can claim more than n); the bookings, services, users and meetings are joined
-- by `LATERAL … OFFSET 0` lookups, so even the generic plan looks each one up by its primary key
-- instead of hashing a whole table.
--
-- The joined rows come from the statement's snapshot, so the claim must take the job row exactly
-- as that snapshot saw it: a row changed after the snapshot was taken and before the claim locked
-- it (the app's booking change, a previous holder's write-back) is locked at its newer version,
-- and would be claimed with an older booking or meeting beside it. The `xmin` check leaves such
-- a row unclaimed (its lock ends with the claim's transaction); it is claimed on the next round,
-- with everything read as it is then.
--
-- Rate limits (`ratelimit.rs`; $4–$8: the limited platforms and their buckets, empty when none
-- is): each due job's first platform call is paid for here, from its provider's and its
-- platform's buckets (`meetingd.take_rate_tokens`, V13), in `run_at` order. That call is on the
-- platform of a pending create intent, else of the live meeting (unless the booking is
-- completed), else, for a confirmed booking of an online service, the service's. A job with no
-- token is not claimed: its `run_at` moves to the turn kept for it (no attempt spent), behind
-- other providers' due jobs. The result's first row says how many were held back and when the
-- next turn comes (`held_back_secs`: the soonest job due later, so a dispatcher that claims
-- rate-limited jobs wakes for each turn, its own or another daemon's; a row without a job when
-- nothing was claimed). Each claimed job says
-- which platform it paid for (`rate_paid`). Jobs on unlimited platforms (Jitsi) pay nothing: with
-- no limited platform the bucket step is skipped whole.
--
-- A claim that may lead to a call on a platform that keeps meetings ($9: Google, Zoom, Teams;
-- the job's first call is on the platform `calls` names, as for rate limits) commits
-- synchronously (`set_config` in the statement: the transaction began with
-- `synchronous_commit = off`), so the claim is durable before that call and needs no hold of its
-- own (`durable`). For the common case, a confirmed booking of an online service on a connected
-- platform that takes create intents ($10), with no live meeting, no manual link and no intent
-- pending, the claim also records the create intent the run will make (platform, the next
-- generation, the provider and the account it is made in) and answers it apart
-- (`claimed_*`); the `intent_*` columns stay as they were before this claim. The run checks that
-- its plan agrees with that intent before it relies on it; an intent the run does not use is
-- cleared by its write-back, no platform call having been made for it. The integration row of
-- the service's platform comes along (`tok`, after `token_row`) for the token store.
WITH due AS (
    SELECT id FROM meetingd.jobs
     WHERE state = 'pending' AND run_at <= now()
       AND (lease_until IS NULL OR lease_until < now())
     ORDER BY run_at, id
     LIMIT $1
     FOR UPDATE SKIP LOCKED
), seen AS (
    SELECT j.id, j.xmin AS seen_xmin, j.run_at, j.booking_id AS job_booking_id,
           j.intent_platform, j.intent_generation, j.intent_owner, j.intent_integration, j.intent_account,
           b.id AS booking_id, b.status::text AS status, b.start_time, b.end_time, b.customer_id,
           b.meeting_status, b.meeting_link::text AS meeting_link,
           s.id AS service_id, s.provider_id, s.title::text AS title, s.description::text AS description,
           COALESCE(s.is_online, false) AS is_online, s.meeting_platform::text AS meeting_platform,
           s.meeting_settings::text AS meeting_settings,
           COALESCE(ig.is_active, false) AS connected, ig.id AS integration_id, ig.identity AS integration_identity,
           m.platform AS m_platform, m.requested_platform AS m_requested_platform, m.external_id AS m_external_id,
           m.join_url AS m_join_url, m.start_time AS m_start, m.end_time AS m_end, m.generation AS m_generation,
           m.state = 'live' AS m_live, m.owner_id AS m_owner_id, m.integration_id AS m_integration_id,
           m.account AS m_account,
           k.calls,
           CASE WHEN j.intent_platform IS NULL AND b.status::text = 'confirmed' AND COALESCE(s.is_online, false)
                     AND s.provider_id IS NOT NULL AND s.meeting_platform::text = ANY ($10::text[])
                     AND COALESCE(ig.is_active, false) AND m.state IS DISTINCT FROM 'live'
                     AND b.meeting_status::text IS DISTINCT FROM 'manual'
                     AND COALESCE(btrim(b.meeting_link::text), '') = ''
                THEN s.meeting_platform::text END AS create_on
      FROM meetingd.jobs j
      LEFT JOIN LATERAL (SELECT * FROM bookings b WHERE b.id = j.booking_id OFFSET 0) b ON true
      LEFT JOIN LATERAL (SELECT * FROM services s WHERE s.id = b.service_id OFFSET 0) s ON true
      LEFT JOIN LATERAL (SELECT i.id, i.is_active IS TRUE AS is_active,
                                COALESCE(i.platform_user_id, i.platform_user_email) AS identity
                           FROM user_meeting_integrations i
                          WHERE i.user_id = s.provider_id AND i.platform = s.meeting_platform::text OFFSET 0) ig ON true
      LEFT JOIN LATERAL (SELECT * FROM meetingd.meetings m WHERE m.booking_id = j.booking_id OFFSET 0) m ON true
     CROSS JOIN LATERAL (SELECT COALESCE(
                j.intent_platform,
                CASE WHEN b.status::text = 'completed' OR m.state IS DISTINCT FROM 'live' THEN NULL ELSE m.platform END,
                CASE WHEN b.status::text = 'confirmed' AND COALESCE(s.is_online, false)
                     THEN s.meeting_platform::text END) AS calls) k
     WHERE j.id = ANY (ARRAY(SELECT id FROM due))
), paying AS (
    SELECT v.id, v.run_at, v.calls AS platform, v.provider_id AS account
      FROM seen v
     WHERE cardinality($4::text[]) > 0 AND v.calls = ANY ($4::text[]) AND v.provider_id IS NOT NULL
), held AS (
    SELECT h.held_job, h.retry_at
      FROM (SELECT array_agg(id ORDER BY run_at, id) AS ids, array_agg(platform ORDER BY run_at, id) AS platforms,
                   array_agg(account ORDER BY run_at, id) AS accounts
              FROM paying) p
     CROSS JOIN LATERAL meetingd.take_rate_tokens(p.ids, p.platforms, p.accounts, $4, $5, $6, $7, $8) h
     WHERE p.ids IS NOT NULL
), deferred AS (
    UPDATE meetingd.jobs j SET run_at = h.retry_at
      FROM held h, seen v
     WHERE j.id = ANY (ARRAY(SELECT held_job FROM held))
       AND j.id = h.held_job AND v.id = j.id AND j.xmin = v.seen_xmin
 RETURNING j.run_at
), claimed AS (
    UPDATE meetingd.jobs j
       SET lease_owner = $2, lease_until = now() + make_interval(secs => $3), lease_token = gen_random_uuid(),
           claim_seq = j.claim_seq + 1, attempts = j.attempts + 1,
           intent_platform = COALESCE(v.create_on, j.intent_platform),
           intent_generation = CASE WHEN v.create_on IS NULL THEN j.intent_generation
                                    ELSE GREATEST(COALESCE(v.m_generation, 0), COALESCE(j.intent_generation, 0)) + 1 END,
           intent_owner = CASE WHEN v.create_on IS NULL THEN j.intent_owner ELSE v.provider_id END,
           intent_integration = CASE WHEN v.create_on IS NULL THEN j.intent_integration ELSE v.integration_id END,
           intent_account = CASE WHEN v.create_on IS NULL THEN j.intent_account ELSE v.integration_identity END
      FROM seen v
     WHERE j.id = ANY (ARRAY(SELECT id FROM due))
       AND j.id <> ALL (ARRAY(SELECT held_job FROM held))
       AND v.id = j.id AND j.xmin = v.seen_xmin
 RETURNING j.id, j.claim_seq, j.lease_token, j.version, j.attempts, j.requested_at, j.write_failures,
           v.create_on IS NOT NULL AS recorded, j.intent_generation AS claimed_generation,
           v.calls = ANY ($9::text[]) AS keeps
)
SELECT c.id AS job_id, v.job_booking_id, c.claim_seq, c.lease_token, c.version,
       c.attempts, c.requested_at, v.intent_platform, v.intent_generation, v.intent_owner, v.intent_integration,
       v.intent_account, c.write_failures,
       CASE WHEN c.recorded THEN v.create_on END AS claimed_platform,
       CASE WHEN c.recorded THEN c.claimed_generation END AS claimed_generation,
       v.booking_id, v.status, v.start_time, v.end_time, v.customer_id, v.meeting_status, v.meeting_link,
       v.service_id, v.provider_id, v.title, v.description, v.is_online, v.meeting_platform, v.meeting_settings,
       v.connected, v.integration_id, v.integration_identity,
       v.m_platform, v.m_requested_platform, v.m_external_id, v.m_join_url, v.m_start, v.m_end, v.m_generation,
       v.m_live, v.m_owner_id, v.m_integration_id, v.m_account,
       cu.full_name::text AS customer_name, cu.email::text AS customer_email, pu.full_name::text AS provider_name,
       pay.platform AS rate_paid, d.held_back, d.held_back_secs, d.durable,
       NULL::int AS token_row, tok.*
  FROM (SELECT count(*) AS held_back,
               EXTRACT(epoch FROM LEAST(min(run_at), CASE WHEN EXISTS (SELECT 1 FROM paying) THEN
                   (SELECT min(f.run_at) FROM meetingd.jobs f WHERE f.state = 'pending' AND f.run_at > now()) END)
                 - clock_timestamp())::float8 AS held_back_secs,
               -- Read once: the transaction commits synchronously when a claimed job may call
               -- a platform that keeps meetings.
               (SELECT set_config('synchronous_commit', 'on', true) = 'on'
                  FROM (SELECT 1 FROM claimed WHERE keeps LIMIT 1) x) IS TRUE AS durable
          FROM deferred) d
  LEFT JOIN claimed c ON true
  LEFT JOIN seen v ON v.id = c.id
  LEFT JOIN paying pay ON pay.id = c.id
  LEFT JOIN LATERAL (SELECT * FROM users u WHERE u.id = v.customer_id OFFSET 0) cu ON true
  LEFT JOIN LATERAL (SELECT * FROM users u WHERE u.id = v.provider_id OFFSET 0) pu ON true
  LEFT JOIN LATERAL ({integration}) tok ON c.recorded OR c.keeps

-- Rate limits shared by every daemon: the token buckets of `[limits.*]`, one row per platform and
-- provider (`account`, the service's provider) and one per platform (`account` the nil UUID), so
-- N daemons together keep each account and each platform within its configured rate.
--
-- A bucket is kept as the generic cell rate algorithm keeps it: `next_at`, the earliest time a
-- token may be taken. With T = 1/rate and span = (burst - 1) * T, taking a token at t needs
-- next_at <= t and sets next_at = greatest(next_at, t - span) + T: at most burst tokens at once,
-- then one every T. `full_at` (next_at + span) is when the bucket is full again, as good as no
-- row. `reserved_until` is the last retry time handed to a job the bucket held back, so held-back
-- jobs, of any daemon, are spread one per T behind each other instead of all coming back at once.
CREATE TABLE meetingd.rate_buckets (
  platform        TEXT NOT NULL,
  account         UUID NOT NULL,
  next_at         TIMESTAMPTZ NOT NULL,
  full_at         TIMESTAMPTZ NOT NULL,
  reserved_until  TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (platform, account)
);

-- Every claim that takes a token rewrites its buckets' rows: no index on a changed column and half
-- of each page free, so the update stays on its page (HOT) and the page prunes itself; vacuumed
-- after a fixed number of changes, like meetingd.jobs (V5). Idle rows (full, nothing reserved)
-- are pruned (`meetingd prune`, db/maintenance.rs).
ALTER TABLE meetingd.rate_buckets SET (
  fillfactor = 50,
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 1000
);

-- Takes one token for each job that can have one now, in the order given, from its account's
-- bucket and its platform's. `jobs`, `platforms`, `accounts`: each job with the platform and
-- provider its platform call draws on; `limited`, `account_every` (T of an account's bucket, seconds),
-- `account_span` ((burst - 1) * T), `platform_every`, `platform_span`: the limited platforms and their
-- buckets. A bucket whose T is 0, or a platform not in `limited`, limits nothing. Returns the jobs
-- held back, each with the time its turn comes (a slot reserved behind the jobs held back
-- before it). Locks the buckets it uses, one by one in one order (no deadlock between daemons),
-- until the caller's transaction ends; each statement here sees the latest committed rows.
CREATE FUNCTION meetingd.take_rate_tokens(
  jobs bigint[], platforms text[], accounts uuid[],
  limited text[], account_every float8[], account_span float8[], platform_every float8[], platform_span float8[]
) RETURNS TABLE (held_job bigint, retry_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  nil CONSTANT uuid := '00000000-0000-0000-0000-000000000000';
  kp text[]; ka uuid[]; ke float8[]; ks float8[];
  nx timestamptz[] := '{}'; rs timestamptz[] := '{}'; changed boolean[] := '{}';
  n0 timestamptz; r0 timestamptz; t timestamptz; slot timestamptz;
  i int; j int; ia int; ip int; b int;
BEGIN
  IF jobs IS NULL OR cardinality(jobs) = 0 THEN
    RETURN;
  END IF;
  SELECT array_agg(k.p ORDER BY k.p, k.a), array_agg(k.a ORDER BY k.p, k.a),
         array_agg(k.e ORDER BY k.p, k.a), array_agg(k.s ORDER BY k.p, k.a)
    INTO kp, ka, ke, ks
    FROM (SELECT DISTINCT x.p, x.a, x.e, x.s
            FROM (SELECT u.p, u.a, l.e, l.s
                    FROM unnest(platforms, accounts) u(p, a)
                    JOIN unnest(limited, account_every, account_span) l(p, e, s) ON l.p = u.p
                   WHERE u.a IS NOT NULL
                  UNION ALL
                  SELECT u.p, nil, l.e, l.s
                    FROM unnest(platforms, accounts) u(p, a)
                    JOIN unnest(limited, platform_every, platform_span) l(p, e, s) ON l.p = u.p
                   WHERE u.a IS NOT NULL) x
           WHERE x.e > 0) k;
  IF kp IS NULL THEN
    RETURN;
  END IF;
  FOR i IN 1 .. cardinality(kp) LOOP
    INSERT INTO meetingd.rate_buckets (platform, account, next_at, full_at, reserved_until)
         VALUES (kp[i], ka[i], '-infinity', '-infinity', '-infinity')
    ON CONFLICT (platform, account) DO NOTHING;
    SELECT r.next_at, r.reserved_until INTO n0, r0
      FROM meetingd.rate_buckets r WHERE r.platform = kp[i] AND r.account = ka[i] FOR UPDATE;
    nx[i] := n0;
    rs[i] := r0;
    changed[i] := false;
  END LOOP;
  t := clock_timestamp();
  FOR j IN 1 .. cardinality(jobs) LOOP
    ia := NULL;
    ip := NULL;
    FOR i IN 1 .. cardinality(kp) LOOP
      IF kp[i] = platforms[j] AND ka[i] = accounts[j] THEN ia := i; END IF;
      IF kp[i] = platforms[j] AND ka[i] = nil THEN ip := i; END IF;
    END LOOP;
    CONTINUE WHEN ia IS NULL AND ip IS NULL;
    IF (ia IS NULL OR nx[ia] <= t) AND (ip IS NULL OR nx[ip] <= t) THEN
      FOREACH b IN ARRAY ARRAY[ia, ip] LOOP
        CONTINUE WHEN b IS NULL;
        nx[b] := greatest(nx[b], t - make_interval(secs => ks[b])) + make_interval(secs => ke[b]);
        changed[b] := true;
      END LOOP;
    ELSE
      slot := t;
      FOREACH b IN ARRAY ARRAY[ia, ip] LOOP
        CONTINUE WHEN b IS NULL OR nx[b] <= t;
        rs[b] := greatest(nx[b], rs[b] + make_interval(secs => ke[b]));
        changed[b] := true;
        slot := greatest(slot, rs[b]);
      END LOOP;
      held_job := jobs[j];
      retry_at := slot;
      RETURN NEXT;
    END IF;
  END LOOP;
  FOR i IN 1 .. cardinality(kp) LOOP
    CONTINUE WHEN NOT changed[i];
    UPDATE meetingd.rate_buckets r
       SET next_at = nx[i], full_at = nx[i] + make_interval(secs => ks[i]), reserved_until = rs[i]
     WHERE r.platform = kp[i] AND r.account = ka[i];
  END LOOP;
END
$$;

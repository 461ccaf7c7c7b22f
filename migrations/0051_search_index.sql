-- Full text at 10M events (issue 18): the indexes are asked for the selective part of a `q`
-- pattern, not the whole pattern (measured at 10M events: docs/scaling.md, full text).
--
-- `ILIKE '%sg-0000000000000abcd%'` makes the trigram index read the posting list of every
-- trigram of the pattern, and some are in nearly every row (`sg `, ` 00`, `000` here; in real
-- events `arn`, `aws`, `com`...): 16,500 index pages (130 MB, more than the
-- default shared_buffers) for 167 matches at 10M events, 225 ms with all of them cached, growing
-- with the table, not with the range. Asked for `%0abcd%` instead, it reads ~100 pages (10 ms),
-- and the whole pattern is then matched on the rows it returns: the result is the same.
--
-- A word whose trigrams are all common (`sg-0000000000000000e`: `000`, `00e`) has no selective
-- stretch; the words of the text (runs of letters and digits) are indexed as tokens for those: a
-- word of the pattern with a separator before it starts a token of any text the pattern
-- matches, and is that whole token when a separator follows it too. Building this index takes
-- minutes on a large table (7 min for 10M events on the 2-core development machine), and it
-- makes indexing (search/index.rs) about a fifth slower.

-- The tokens of a search text: its runs of ASCII letters and digits, lower-cased, of four
-- characters or more (shorter ones are in most texts, and the index costs each row's indexing a
-- lot less without them), each cut to 200 characters (a lexeme has at most 2,047 bytes).
CREATE FUNCTION skywarden_search_tokens(search_text text) RETURNS tsvector
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT array_to_tsvector(ARRAY(
        SELECT left(w, 200)
        FROM unnest(string_to_array(regexp_replace(lower(search_text), '[^a-z0-9]+', ' ', 'g'), ' ')) w
        WHERE length(w) >= 4))
$$;

CREATE INDEX event_search_tokens_idx ON event_search USING gin (skywarden_search_tokens(search_text));

-- skywarden_search_index(pattern): what the search asks the indexes for an `ILIKE` pattern
-- (search/events/text_search.rs matches the pattern itself on what they return):
-- * only for a plain substring search `%literal%` whose literal has no unescaped wildcard (what
--   the API sends); otherwise neither (NULL, NULL): the pattern itself is asked, as before;
-- * `trigram_pattern`: a stretch of a run of letters and digits of the (lower-cased) literal,
--   whose trigrams are each held by at most a fifth of a sample of indexed texts, with two
--   trigrams or more, one of them in at most 1% of the sample, or three or more, each in at
--   most 5%; the most selective such stretch (product of the frequencies). Any text the pattern
--   matches holds it, and no word boundary inside it adds padded trigrams. The sample is the
--   column's histogram, which ANALYZE (autovacuum) keeps in pg_stats: about a hundred search
--   texts, free to read. Without statistics, neither;
-- * else `token_query` (and no trigram pattern): the AND of the literal's words that start a
--   token (a separator before them): the whole token (four characters or more) when a separator
--   follows, else a prefix of five characters or more; none common (ANALYZE's most common
--   tokens, over 1%);
-- * else neither.
CREATE FUNCTION skywarden_search_index(pattern text, OUT trigram_pattern text, OUT token_query tsquery)
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    literal text := '';
    c text;
    i int := 2;
    sample text[];
    n int;
    run text;
    counts int[];
    k int;
    start_at int;
    low int;
    high int;
    est float8;
    best text;
    best_est float8;
    common text[];
    common_freqs real[];
    pos int;
    term text;
    terms text[] := '{}';
    followed boolean;
BEGIN
    -- Only a plain substring search, `%literal%` with nothing but escaped wildcards inside (what
    -- the API sends); for any other pattern, neither.
    IF pattern IS NULL OR length(pattern) < 2 OR left(pattern, 1) <> '%' OR right(pattern, 1) <> '%' THEN
        RETURN;
    END IF;
    WHILE i < length(pattern) LOOP
        c := substr(pattern, i, 1);
        IF c = '\' THEN
            i := i + 1;
            IF i >= length(pattern) THEN RETURN; END IF;
            c := substr(pattern, i, 1);
        ELSIF c IN ('%', '_') THEN
            RETURN;
        END IF;
        literal := literal || c;
        i := i + 1;
    END LOOP;
    -- ILIKE compares lower() of both sides: whatever the pattern matches holds this.
    literal := lower(literal);

    -- 1. A stretch of the literal's trigrams none of which is common, asked of the trigram index
    -- alone. The sample: the search texts ANALYZE keeps as the column's histogram (~100).
    SELECT array_agg(lower(v)) INTO sample
    FROM pg_stats s, unnest(s.histogram_bounds::text::text[]) v
    WHERE s.schemaname = current_schema() AND s.tablename = 'event_search' AND s.attname = 'search_text';
    n := coalesce(cardinality(sample), 0);
    IF n < 20 THEN
        RETURN;
    END IF;
    FOR run IN SELECT m[1] FROM regexp_matches(literal, '([a-z0-9]+)', 'g') m LOOP
        CONTINUE WHEN length(run) < 4;
        -- How many sampled texts hold each trigram of the run.
        SELECT array_agg((SELECT count(*) FROM unnest(sample) v WHERE strpos(v, substr(run, p, 3)) > 0)::int ORDER BY p)
        INTO counts FROM generate_series(1, length(run) - 2) p;
        -- Each stretch of trigrams no more than a fifth of the sample holds is a candidate.
        start_at := NULL;
        FOR k IN 1 .. cardinality(counts) + 1 LOOP
            IF k <= cardinality(counts) AND counts[k] * 5 <= n THEN
                start_at := coalesce(start_at, k);
            ELSIF start_at IS NOT NULL THEN
                IF k - start_at >= 2 THEN
                    SELECT min(x), max(x), exp(sum(ln((x + 0.5) / (n + 1)))) INTO low, high, est
                    FROM unnest(counts[start_at:k - 1]) x;
                    -- Two trigrams or more, one of them in at most 1% of the sample; or three or
                    -- more, each in at most 5%.
                    IF (low * 100 <= n OR (k - start_at >= 3 AND high * 20 <= n))
                       AND (best IS NULL OR est < best_est) THEN
                        best := substr(run, start_at, k - start_at + 2);
                        best_est := est;
                    END IF;
                END IF;
                start_at := NULL;
            END IF;
        END LOOP;
    END LOOP;
    IF best IS NOT NULL THEN
        trigram_pattern := '%' || best || '%';
        RETURN;
    END IF;

    -- 2. Words of the literal that start a token of the text (a separator before them in the
    -- literal): whole tokens (four characters or more: shorter ones are not indexed) when a
    -- separator follows too, else token prefixes of five characters or more, asked of the token
    -- index. None common (ANALYZE's most common elements, over 1%).
    SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs INTO common, common_freqs
    FROM pg_stats s
    WHERE s.schemaname = current_schema() AND s.tablename = 'event_search_tokens_idx';
    pos := 1;
    FOR run IN SELECT m[1] FROM regexp_matches(literal, '([a-z0-9]+)', 'g') m LOOP
        pos := strpos(substr(literal, pos), run) + pos - 1;
        IF pos > 1 THEN
            followed := pos + length(run) <= length(literal);
            IF followed AND length(run) BETWEEN 4 AND 199 THEN
                IF coalesce((SELECT sum(f) FROM unnest(common, common_freqs) AS e(w, f) WHERE w = run), 0) <= 0.01 THEN
                    terms := terms || quote_literal(run);
                END IF;
            ELSIF length(run) >= 5 THEN
                term := left(run, 200);
                IF coalesce((SELECT sum(f) FROM unnest(common, common_freqs) AS e(w, f) WHERE left(w, length(term)) = term), 0) <= 0.01 THEN
                    terms := terms || (quote_literal(term) || ':*');
                END IF;
            END IF;
        END IF;
        pos := pos + length(run);
    END LOOP;
    IF cardinality(terms) > 0 THEN
        token_query := array_to_string(terms, ' & ')::tsquery;
    END IF;
END
$$;

-- The token statistics the function reads (and the planner's estimates of the token index).
ANALYZE event_search;

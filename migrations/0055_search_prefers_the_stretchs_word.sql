-- Full text at 10M events (issue 18): a word the pattern's selective stretch lies in is asked
-- of the token index, when the literal makes it start a token, rather than the stretch of the
-- trigram index.
--
-- Any text holding a token that starts with the word holds the stretch too, so the token index
-- never returns more candidates than the trigram index would, and its bitmap is exact (nothing
-- to recheck). The trigram stretch of a short id can be far from selective: at 10M events the
-- queries bench's `sg-0000000000000001c` was asked as `%001c%`, which 3,608 pages of 30 days
-- held (372 ms cold, 245 ms warm, for 167 matches), `sg-00000000000001176` as `%01176%`
-- (95 / 29 ms); their words, asked of the token index, read the id's 500 events (2 to 3 ms;
-- 7 to 12 ms with the heap cold). Only that word is asked, not every word of the literal, so
-- no other word's posting list is read. Otherwise as migration 0054: the cheapest stretch of the
-- trigram index, else every word that starts a token, else neither.

-- `lake_pattern`: the stretch whichever the hot side is asked, for the lake cache (`lake_events`),
-- which has a trigram index and no token index. A new output, so the function is dropped and
-- created again.
DROP FUNCTION skywarden_search_index(text);
CREATE FUNCTION skywarden_search_index(pattern text, OUT trigram_pattern text, OUT token_query tsquery,
                                       OUT lake_pattern text)
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
    lead_at int;
    low int;
    high int;
    freq float8;
    total float8;
    product float8;
    reads float8;
    best text;
    best_cost float8;
    common text[];
    common_freqs real[];
    pos int;
    term text;
    terms text[] := '{}';
    followed boolean;
    ordinal int := 0;
    best_ordinal int;
    best_term text;
    run_term text;
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
        ordinal := ordinal + 1;
        CONTINUE WHEN length(run) < 4;
        -- How many sampled texts hold each trigram of the run.
        SELECT array_agg((SELECT count(*) FROM unnest(sample) v WHERE strpos(v, substr(run, p, 3)) > 0)::int ORDER BY p)
        INTO counts FROM generate_series(1, length(run) - 2) p;
        -- Each stretch of 2 to 8 trigrams none of which a fifth of the sample holds is a
        -- candidate; the cheapest wins.
        FOR lead_at IN 1 .. cardinality(counts) - 1 LOOP
            CONTINUE WHEN counts[lead_at] * 5 > n;
            low := counts[lead_at];
            high := counts[lead_at];
            freq := (counts[lead_at] + 0.5) / (n + 1);
            total := freq;
            product := freq;
            FOR k IN lead_at + 1 .. least(cardinality(counts), lead_at + 7) LOOP
                EXIT WHEN counts[k] * 5 > n;
                low := least(low, counts[k]);
                high := greatest(high, counts[k]);
                freq := (counts[k] + 0.5) / (n + 1);
                total := total + freq;
                product := product * freq;
                -- Two trigrams or more, one of them in at most 1% of the sample; or three or
                -- more, each in at most 5%.
                CONTINUE WHEN NOT (low * 100 <= n OR (k - lead_at >= 2 AND high * 20 <= n));
                -- Pages read, as a share of the table: the posting list of every trigram
                -- (~4,000 entries a GIN page), and a heap page per candidate (a row holding
                -- them all). By the candidates alone, a common trigram (`003` of zero-padded
                -- ids) always looked worth adding; its posting list is what the search read.
                reads := total / 4000 + product;
                IF best IS NULL OR reads < best_cost THEN
                    best := substr(run, lead_at, k - lead_at + 3);
                    best_cost := reads;
                    best_ordinal := ordinal;
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
    -- 2. Words of the literal that start a token of the text (a separator before them in the
    -- literal): whole tokens (four characters or more: shorter ones are not indexed) when a
    -- separator follows too, else token prefixes of five characters or more. None common
    -- (ANALYZE's most common elements, over 1%). The word the stretch lies in alone, when it is
    -- one of them (and the whole word within the 200 characters a token keeps); else the
    -- stretch; else all of them.
    SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs INTO common, common_freqs
    FROM pg_stats s
    WHERE s.schemaname = current_schema() AND s.tablename = 'event_search_tokens_idx';
    pos := 1;
    ordinal := 0;
    FOR run IN SELECT m[1] FROM regexp_matches(literal, '([a-z0-9]+)', 'g') m LOOP
        ordinal := ordinal + 1;
        pos := strpos(substr(literal, pos), run) + pos - 1;
        run_term := NULL;
        IF pos > 1 THEN
            followed := pos + length(run) <= length(literal);
            IF followed AND length(run) BETWEEN 4 AND 199 THEN
                IF coalesce((SELECT sum(f) FROM unnest(common, common_freqs) AS e(w, f) WHERE w = run), 0) <= 0.01 THEN
                    run_term := quote_literal(run);
                END IF;
            ELSIF length(run) >= 5 THEN
                term := left(run, 200);
                IF coalesce((SELECT sum(f) FROM unnest(common, common_freqs) AS e(w, f) WHERE left(w, length(term)) = term), 0) <= 0.01 THEN
                    run_term := quote_literal(term) || ':*';
                END IF;
            END IF;
        END IF;
        IF run_term IS NOT NULL THEN
            terms := terms || run_term;
            IF ordinal = best_ordinal AND length(run) <= 200 THEN
                best_term := run_term;
            END IF;
        END IF;
        pos := pos + length(run);
    END LOOP;
    IF best IS NOT NULL THEN
        lake_pattern := '%' || best || '%';
    END IF;
    IF best_term IS NOT NULL THEN
        token_query := best_term::tsquery;
    ELSIF best IS NOT NULL THEN
        trigram_pattern := '%' || best || '%';
    ELSIF cardinality(terms) > 0 THEN
        token_query := array_to_string(terms, ' & ')::tsquery;
    END IF;
END
$$;

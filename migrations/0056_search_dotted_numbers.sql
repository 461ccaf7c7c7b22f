-- Full text at 10M events (issue 18): an IPv4 address, a version (`2.15.30`), any dotted
-- number searched as `q` is asked of the token index.
--
-- `176.36.17.19` has no word of four characters or more and no trigram stretch worth asking
-- (its trigrams `176`, `36.`... are in most texts, and those holding digits only are in every
-- event's ids), so migrations 0051 to 0055 asked the indexes nothing for it: a search scanned the
-- range, 2.3 s for 30 days at 10M events. Now the tokens of a text also hold, for each run of
-- digits and dots that holds a dot, every end of it that starts at a digit and has a dot within
-- its first nine characters (`176.36.17.19`, `76.36.17.19`, `6.36.17.19`, `36.17.19` ... `7.19`),
-- each cut to 32 characters (a long run must not make a huge entry: a tsvector holds at most
-- 1 MB). A literal's dotted run (from its first digit) whose first dot is within nine characters
-- starts one of these in any text the pattern matches, wherever the text's run begins, so a
-- prefix query of the token index for its first 32 characters returns every such text (and a
-- few more, which the search's own match then drops). A word token has no dot, so no word is a
-- dotted token; an all-digit word's prefix query (`'12345':*`) also matches dotted tokens
-- (`12345.6`), which only adds candidates the search's match drops.
--
-- The index is built again (a function it holds changes), in the migration's transaction:
-- minutes on a large table, during which nothing is indexed (docs/scaling.md, "Full text at
-- 10M events: addresses and other dotted numbers", has the figures measured at 10M events).

DROP INDEX event_search_tokens_idx;

CREATE OR REPLACE FUNCTION skywarden_search_tokens(search_text text) RETURNS tsvector
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT array_to_tsvector(ARRAY(
        SELECT left(w, 200)
        FROM unnest(string_to_array(regexp_replace(lower(search_text), '[^a-z0-9]+', ' ', 'g'), ' ')) w
        WHERE length(w) >= 4
        UNION ALL
        -- Each run of digits and dots from its first digit, when a dot follows that digit
        -- (greedy: the whole run), and each of its ends from a digit with a dot near its start.
        SELECT left(substr(r[1], p), 32)
        FROM regexp_matches(search_text, '[0-9][0-9.]*[.][0-9.]*', 'g') r, generate_series(1, length(r[1])) p
        WHERE substr(r[1], p, 1) BETWEEN '0' AND '9' AND strpos(substr(r[1], p, 9), '.') > 0))
$$;

CREATE INDEX event_search_tokens_idx ON event_search USING gin (skywarden_search_tokens(search_text));

-- skywarden_search_dotted_query(pattern): for a plain substring search `%literal%` (what the API
-- sends), the AND of a prefix query for each dotted run of the literal that starts one of the
-- tokens above (from its first digit: a dot within its first nine characters; five characters
-- or more, fewer match too many tokens to be worth it), its first 32 characters (a token's
-- length), none common as ANALYZE counts the index's elements; NULL when there is none.
CREATE FUNCTION skywarden_search_dotted_query(pattern text) RETURNS tsquery
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    literal text := '';
    c text;
    i int := 2;
    run text;
    terms text[] := '{}';
    common text[];
    common_freqs real[];
BEGIN
    IF pattern IS NULL OR length(pattern) < 2 OR left(pattern, 1) <> '%' OR right(pattern, 1) <> '%' THEN
        RETURN NULL;
    END IF;
    WHILE i < length(pattern) LOOP
        c := substr(pattern, i, 1);
        IF c = '\' THEN
            i := i + 1;
            IF i >= length(pattern) THEN RETURN NULL; END IF;
            c := substr(pattern, i, 1);
        ELSIF c IN ('%', '_') THEN
            RETURN NULL;
        END IF;
        literal := literal || c;
        i := i + 1;
    END LOOP;
    SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs INTO common, common_freqs
    FROM pg_stats s
    WHERE s.schemaname = current_schema() AND s.tablename = 'event_search_tokens_idx';
    FOR run IN SELECT left(m[1], 32) FROM regexp_matches(literal, '[0-9][0-9.]*', 'g') m LOOP
        CONTINUE WHEN strpos(left(run, 9), '.') = 0 OR length(run) < 5;
        CONTINUE WHEN coalesce((SELECT sum(f) FROM unnest(common, common_freqs) AS e(w, f) WHERE left(w, length(run)) = run), 0) > 0.01;
        terms := terms || (quote_literal(run) || ':*');
    END LOOP;
    IF cardinality(terms) = 0 THEN
        RETURN NULL;
    END IF;
    RETURN array_to_string(terms, ' & ')::tsquery;
END
$$;

-- skywarden_search_index (migration 0055) keeps its name and outputs; what it asked is asked
-- first, and a pattern it asks nothing for is asked of the token index for its dotted runs.
ALTER FUNCTION skywarden_search_index(text) RENAME TO skywarden_search_index_by_words;

CREATE FUNCTION skywarden_search_index(pattern text, OUT trigram_pattern text, OUT token_query tsquery,
                                       OUT lake_pattern text)
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    SELECT w.trigram_pattern, w.token_query, w.lake_pattern INTO trigram_pattern, token_query, lake_pattern
    FROM skywarden_search_index_by_words(pattern) w;
    IF trigram_pattern IS NULL AND token_query IS NULL THEN
        token_query := skywarden_search_dotted_query(pattern);
    END IF;
END
$$;

-- The token statistics the functions read (and the planner's estimates of the token index).
ANALYZE event_search;

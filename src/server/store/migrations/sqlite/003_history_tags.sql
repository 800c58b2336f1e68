-- veil schema v3: a format-3 client's tag over each stored exchange (on its assistant
-- message), chained per session with a key only the client holds, so that it can tell
-- forged, missing and reordered messages apart from its own. NULL for the original's
-- clients and for exchanges without one.

ALTER TABLE messages ADD COLUMN history_tag TEXT;

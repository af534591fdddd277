-- +goose Up
-- Periodic snapshots of each document's text, for reading old revisions
-- and as the points where retention cuts history.
CREATE TABLE snapshots (
    doc_id text   NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    rev    bigint NOT NULL CHECK (rev > 0),
    text   text   NOT NULL,
    PRIMARY KEY (doc_id, rev)
);

-- The text's size in bytes at rev, kept by every write so that listing
-- documents does not read their texts.
ALTER TABLE documents ADD COLUMN size bigint NOT NULL DEFAULT 0;
UPDATE documents SET size = octet_length(text);

-- +goose Down
ALTER TABLE documents DROP COLUMN size;
DROP TABLE snapshots;

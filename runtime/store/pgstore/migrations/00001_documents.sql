-- +goose Up
CREATE TABLE documents (
    id         text        PRIMARY KEY,
    text       text        NOT NULL DEFAULT '',
    rev        bigint      NOT NULL DEFAULT 0 CHECK (rev >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE operations (
    doc_id     text        NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    rev        bigint      NOT NULL CHECK (rev > 0),
    author     text        NOT NULL,
    client_id  text        NOT NULL,
    seq        bigint      NOT NULL,
    op         jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (doc_id, rev)
);

-- +goose Down
DROP TABLE operations;
DROP TABLE documents;

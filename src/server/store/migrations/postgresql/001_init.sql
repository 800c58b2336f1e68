-- veil schema v1 (PostgreSQL 15): the seven tables of spec §5.
-- Timestamps are TEXT "YYYY-MM-DDTHH:MM:SS.ffffff" (naive UTC; text order = time order),
-- booleans BOOLEAN, JSON columns JSONB.
-- Roles are stored as their API values (defect §10.12). audit_logs has no foreign
-- keys: a system action writes a NULL actor and the rows outlive the users and
-- organizations they mention (defects §10.10, §10.11).

CREATE TABLE users (
    id                             TEXT NOT NULL PRIMARY KEY,
    public_key                     VARCHAR(64),
    encrypted_private_key          TEXT,
    encrypted_private_key_iv       VARCHAR(32),
    encrypted_private_key_tag      VARCHAR(32),
    key_salt                       VARCHAR(64),
    recovery_encrypted_private_key TEXT,
    recovery_iv                    VARCHAR(32),
    recovery_tag                   VARCHAR(32),
    recovery_salt                  VARCHAR(64),
    has_encryption_keys            BOOLEAN NOT NULL DEFAULT FALSE,
    encryption_created_at          TEXT,
    created_at                     TEXT NOT NULL,
    updated_at                     TEXT NOT NULL
);
CREATE INDEX ix_users_public_key ON users (public_key);
CREATE INDEX ix_users_has_encryption ON users (has_encryption_keys);

CREATE TABLE organizations (
    id                             TEXT NOT NULL PRIMARY KEY,
    name                           TEXT NOT NULL,
    slug                           TEXT,
    org_public_key                 VARCHAR(64),
    admin_encrypted_private_key    TEXT,
    admin_encrypted_private_key_iv VARCHAR(32),
    admin_encrypted_private_key_tag VARCHAR(32),
    admin_key_salt                 VARCHAR(64),
    has_encryption_keys            BOOLEAN NOT NULL DEFAULT FALSE,
    encryption_created_at          TEXT,
    encryption_created_by          TEXT, -- a user id, deliberately not a foreign key
    custom_model_endpoint          TEXT,
    fine_tuned_model_id            TEXT,
    created_at                     TEXT NOT NULL,
    updated_at                     TEXT NOT NULL,
    CONSTRAINT uq_organizations_slug UNIQUE (slug)
);
CREATE INDEX ix_organizations_org_public_key ON organizations (org_public_key);
CREATE INDEX ix_organizations_has_encryption ON organizations (has_encryption_keys);

CREATE TABLE organization_memberships (
    id                           TEXT NOT NULL PRIMARY KEY,
    user_id                      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id                       TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    role                         TEXT NOT NULL DEFAULT 'org:member' CHECK (role IN ('org:admin', 'org:member')),
    encrypted_org_key_ephemeral  VARCHAR(64),
    encrypted_org_key_iv         VARCHAR(32),
    encrypted_org_key_ciphertext TEXT,
    encrypted_org_key_tag        VARCHAR(32),
    encrypted_org_key_hkdf_salt  VARCHAR(64),
    has_org_key                  BOOLEAN NOT NULL DEFAULT FALSE,
    key_distributed_at           TEXT,
    key_distributed_by           TEXT,
    joined_at                    TEXT,
    created_at                   TEXT NOT NULL,
    updated_at                   TEXT NOT NULL,
    CONSTRAINT uq_membership_user_org UNIQUE (user_id, org_id)
);
CREATE INDEX ix_memberships_org_id ON organization_memberships (org_id);
CREATE INDEX ix_memberships_user_id ON organization_memberships (user_id);
CREATE INDEX ix_memberships_has_org_key ON organization_memberships (has_org_key);
CREATE INDEX ix_memberships_role ON organization_memberships (role);

CREATE TABLE sessions (
    id         TEXT NOT NULL PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id     TEXT REFERENCES organizations (id) ON DELETE CASCADE, -- NULL = personal
    name       TEXT NOT NULL DEFAULT 'New Chat',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX ix_sessions_user_id ON sessions (user_id);
CREATE INDEX ix_sessions_org_id ON sessions (org_id);
CREATE INDEX ix_sessions_user_org ON sessions (user_id, org_id, updated_at);

CREATE TABLE messages (
    id                   TEXT NOT NULL PRIMARY KEY,
    session_id           TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    role                 TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    ephemeral_public_key VARCHAR(64) NOT NULL,
    iv                   VARCHAR(32) NOT NULL,
    ciphertext           TEXT NOT NULL,
    auth_tag             VARCHAR(32) NOT NULL,
    hkdf_salt            VARCHAR(64) NOT NULL,
    model_used           TEXT,
    input_tokens         INTEGER,
    output_tokens        INTEGER,
    created_at           TEXT NOT NULL
);
CREATE INDEX ix_messages_session_id ON messages (session_id);
CREATE INDEX ix_messages_created_at ON messages (created_at);
CREATE INDEX ix_messages_session_created ON messages (session_id, created_at);

CREATE TABLE context_stores (
    id           TEXT NOT NULL PRIMARY KEY,
    owner_type   TEXT NOT NULL CHECK (owner_type IN ('user', 'org')),
    owner_id     TEXT NOT NULL,
    store_type   TEXT NOT NULL DEFAULT 'postgres',
    context_data JSONB,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    CONSTRAINT uq_owner_type_id UNIQUE (owner_type, owner_id)
);

CREATE TABLE audit_logs (
    id             TEXT NOT NULL PRIMARY KEY,
    event_type     TEXT NOT NULL CHECK (event_type <> ''),
    actor_user_id  TEXT, -- no foreign keys here: see the header
    target_user_id TEXT,
    org_id         TEXT,
    event_data     JSONB,
    created_at     TEXT NOT NULL
);
CREATE INDEX ix_audit_logs_event_type ON audit_logs (event_type);
CREATE INDEX ix_audit_logs_actor_user_id ON audit_logs (actor_user_id);
CREATE INDEX ix_audit_logs_target_user_id ON audit_logs (target_user_id);
CREATE INDEX ix_audit_logs_org_id ON audit_logs (org_id);
CREATE INDEX ix_audit_logs_created_at ON audit_logs (created_at);
CREATE INDEX ix_audit_logs_org_created ON audit_logs (org_id, created_at);
CREATE INDEX ix_audit_logs_event_created ON audit_logs (event_type, created_at);

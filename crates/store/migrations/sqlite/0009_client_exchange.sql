-- A client's place in call chains (token exchange): the audiences it serves, whom it may act
-- for, and what it may call and pass on when it does (JSON arrays of strings, as the other
-- list columns). Each served audience also has a row in client_serves, whose primary key
-- refuses an audience served by two clients; written with the client, in one transaction.
ALTER TABLE clients ADD COLUMN serves TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN act_for TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN delegate_audiences TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN delegate_scopes TEXT NOT NULL DEFAULT '[]';
CREATE TABLE client_serves (
    audience   TEXT PRIMARY KEY NOT NULL,
    client_id  TEXT NOT NULL
);
CREATE INDEX client_serves_client ON client_serves (client_id);

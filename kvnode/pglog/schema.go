package pglog

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations[v] takes the schema from version v to v+1. Append only: a
// migration that has run somewhere is never changed.
var migrations = []string{
	// 0 → 1: the log, its head and the state.
	`CREATE TABLE kv_head (
		one      boolean PRIMARY KEY DEFAULT true CHECK (one),
		sequence bigint  NOT NULL,
		store    text    NOT NULL
	);
	CREATE TABLE transactions (
		sequence   bigint   PRIMARY KEY,
		event_type smallint NOT NULL,
		key        bytea    NOT NULL,
		value      bytea
	);
	CREATE TABLE kv_state (
		key   bytea PRIMARY KEY,
		value bytea NOT NULL
	);`,
}

// SchemaVersion is the version this kvnode creates and understands.
var SchemaVersion = len(migrations)

// schemaLock is the advisory lock key under which the schema is created
// and migrated ("kvnode" in ASCII), so that nodes starting at once take
// turns instead of racing their CREATE TABLEs.
const schemaLock = 0x6b766e6f6465

// ErrForeignDatabase is returned by Open for a database it must not use.
var ErrForeignDatabase = errors.New("refusing the database")

// migrate brings the schema to SchemaVersion in one transaction (DDL is
// transactional in PostgreSQL: a failed migration leaves no half), and
// claims the database for store, or checks that it is store's.
func migrate(ctx context.Context, pool *pgxpool.Pool, store string) (from int, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// An acknowledged write is a committed one: with
		// synchronous_commit off, a commit returns before it is durable.
		var syncCommit string
		if err := tx.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&syncCommit); err != nil {
			return err
		}
		if syncCommit == "off" {
			return fmt.Errorf("%w: synchronous_commit is off for this user and database, so a commit may be lost in a crash after it was acknowledged; set it to on (ALTER ROLE or ALTER DATABASE … SET synchronous_commit = on)", ErrForeignDatabase)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(schemaLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS kv_schema_version (
			one     boolean PRIMARY KEY DEFAULT true CHECK (one),
			version integer NOT NULL
		)`); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT version FROM kv_schema_version`).Scan(&from)
		if errors.Is(err, pgx.ErrNoRows) {
			from = 0
		} else if err != nil {
			return err
		}
		if from > SchemaVersion {
			return fmt.Errorf("%w: its schema is version %d, newer than this kvnode's %d: run a kvnode at least as new as the one that migrated it", ErrForeignDatabase, from, SchemaVersion)
		}
		for v := from; v < SchemaVersion; v++ {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("schema migration %d to %d: %w", v, v+1, err)
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO kv_schema_version (version) VALUES ($1)
			ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version`, SchemaVersion); err != nil {
			return err
		}
		// A log without its head would hand out sequences it already
		// holds: refuse it rather than start counting again.
		var headless bool
		if err := tx.QueryRow(ctx, `SELECT NOT EXISTS (SELECT FROM kv_head)
			AND (EXISTS (SELECT FROM transactions) OR EXISTS (SELECT FROM kv_state))`).Scan(&headless); err != nil {
			return err
		}
		if headless {
			return fmt.Errorf("%w: table kv_head has lost its row while transactions or kv_state hold data", ErrForeignDatabase)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO kv_head (sequence, store) VALUES (0, $1)
			ON CONFLICT (one) DO NOTHING`, store); err != nil {
			return err
		}
		var owner string
		if err := tx.QueryRow(ctx, `SELECT store FROM kv_head`).Scan(&owner); err != nil {
			return err
		}
		if owner != store {
			return fmt.Errorf("%w: it holds the log of store %q, and this node is of store %q (each store needs a database of its own)", ErrForeignDatabase, owner, store)
		}
		return nil
	})
	return from, err
}

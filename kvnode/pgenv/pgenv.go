// Package pgenv declares the environment through which kvnode is told
// where its Postgres log is: the book's TLOG_DB_* names (mapped the right
// way round: the book's factory swaps host and database), and the ones
// added beside them. kvnode reads them and the operator sets them; both
// import them from here. It imports nothing, so the operator does not
// link a PostgreSQL driver to name a variable.
package pgenv

const (
	// Host is PostgreSQL's host, or the directory of its Unix socket.
	Host = "TLOG_DB_HOST"
	// Port is PostgreSQL's port.
	Port = "TLOG_DB_PORT"
	// Database holds the log's tables, one store's.
	Database = "TLOG_DB_DATABASE"
	// Username is the user kvnode connects as.
	Username = "TLOG_DB_USERNAME"
	// Password is read from the environment only (a Secret's key), never
	// from a flag, which every process on the node could read.
	Password = "TLOG_DB_PASSWORD"
	// SSLMode is disable, require, verify-ca or verify-full.
	SSLMode = "TLOG_DB_SSLMODE"
	// CA is the path of the PEM CA that verifies the server.
	CA = "TLOG_DB_CA"
	// Store names the store (namespace/name) that owns the database.
	Store = "TLOG_DB_STORE"
	// LogFlag is the flag that puts kvnode in Postgres mode.
	LogFlag = "--log=postgres"
)

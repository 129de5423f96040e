package pglog

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// SSL modes, with libpq's meanings.
const (
	SSLDisable    = "disable"
	SSLRequire    = "require"
	SSLVerifyCA   = "verify-ca"
	SSLVerifyFull = "verify-full"
)

// SSLModes are the accepted values of Config.SSLMode.
var SSLModes = []string{SSLDisable, SSLRequire, SSLVerifyCA, SSLVerifyFull}

// Config says where the log is and how to reach it.
type Config struct {
	// Host is a host name or address, or the directory of a Unix socket.
	Host     string
	Port     int
	Database string
	User     string
	// Password is never logged, and never put in an error.
	Password string
	// SSLMode is one of SSLModes; empty means require.
	SSLMode string
	// CAFile is the PEM CA that verifies the server (verify-ca, verify-full).
	CAFile string
	// Store names the store that owns the database (namespace/name). A
	// database another store owns is refused; empty is a store of its own.
	Store string
	// QueryTimeout bounds every query; 0 means 5 s.
	QueryTimeout time.Duration
	// Retain is how many events the log keeps behind its head when pruned;
	// a node further behind reloads kv_state. 0 means 100,000.
	Retain int64
	// PruneInterval is how often the log is pruned; 0 means 30 s.
	PruneInterval time.Duration
	// PollInterval is how often a node looks for new events when no
	// notification has come (a notification can be lost with its
	// connection); 0 means 1 s.
	PollInterval time.Duration
	// MaxConns bounds the connections of the pool, the listener aside;
	// 0 means 8.
	MaxConns int32
	Logger   *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Port == 0 {
		c.Port = 5432
	}
	if c.SSLMode == "" {
		c.SSLMode = SSLRequire
	}
	if c.QueryTimeout <= 0 {
		c.QueryTimeout = 5 * time.Second
	}
	if c.Retain <= 0 {
		c.Retain = 100_000
	}
	if c.PruneInterval <= 0 {
		c.PruneInterval = 30 * time.Second
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 8
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate names the first setting that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Host == "":
		return errors.New("postgres host is empty")
	case c.Database == "":
		return errors.New("postgres database is empty")
	case c.Port < 1 || c.Port > 65535:
		return fmt.Errorf("postgres port %d is not 1 to 65535", c.Port)
	}
	known := false
	for _, m := range SSLModes {
		known = known || c.SSLMode == m
	}
	if !known {
		return fmt.Errorf("postgres sslmode %q is not one of %s", c.SSLMode, strings.Join(SSLModes, ", "))
	}
	if (c.SSLMode == SSLVerifyCA || c.SSLMode == SSLVerifyFull) && c.CAFile == "" {
		return fmt.Errorf("postgres sslmode %s needs a CA file to verify the server with", c.SSLMode)
	}
	return nil
}

// poolConfig builds pgx's settings as a URL, whose encoding escapes every
// value: the book formats a key=value string, where a space or quote in
// a password breaks it.
func (c Config) poolConfig() (*pgxpool.Config, error) {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(c.User, c.Password), Path: "/" + c.Database}
	q := url.Values{}
	if strings.HasPrefix(c.Host, "/") {
		q.Set("host", c.Host)
		q.Set("port", strconv.Itoa(c.Port))
	} else {
		u.Host = net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	}
	q.Set("sslmode", c.SSLMode)
	if c.CAFile != "" {
		q.Set("sslrootcert", c.CAFile)
	}
	q.Set("application_name", "kvnode")
	// Never a standby: a read-only server would answer the head query
	// from behind, and take no writes.
	q.Set("target_session_attrs", "read-write")
	u.RawQuery = q.Encode()
	pc, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		// pgx's message quotes the connection string; never the password.
		return nil, fmt.Errorf("postgres settings (host %s, port %d, database %s, sslmode %s): %w", c.Host, c.Port, c.Database, c.SSLMode, redact(err, c.Password))
	}
	pc.MaxConns = c.MaxConns
	pc.ConnConfig.ConnectTimeout = c.QueryTimeout
	return pc, nil
}

// redact removes the password from an error's text, whatever produced it.
func redact(err error, password string) error {
	if err == nil || password == "" || !strings.Contains(err.Error(), password) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), password, "xxxxx"))
}

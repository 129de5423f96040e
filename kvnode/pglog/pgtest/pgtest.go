// Package pgtest runs a real PostgreSQL server for tests: Debian's
// binaries, a data directory of the test's own, a Unix socket in it and a
// loopback port, password authentication. Nothing else is shared with the
// machine's own PostgreSQL, if it has one.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvstore-operator/kvstore-operator/kvnode/pglog"
)

// User and Password are the superuser of every test server. The password
// has characters a key=value connection string would choke on.
const (
	User     = "kvtest"
	Password = "p@ss word'\"=;x"
)

// Server is one running PostgreSQL.
type Server struct {
	Dir  string // holds data/, the socket and the log
	Port int
	// IP is the address it listens on besides its socket.
	IP   string
	bin  string
	cred *syscall.Credential
	// allow is a CIDR whose clients may connect with the password, besides
	// loopback and the socket.
	allow string
}

// Options place a server elsewhere than loopback.
type Options struct {
	// IP to listen on; empty is 127.0.0.1.
	IP string
	// Allow is a CIDR of clients that may connect over TCP with the
	// password (e.g. the pods of a test cluster).
	Allow string
}

// Bin finds Debian's PostgreSQL binaries: on PATH, else the newest
// /usr/lib/postgresql/*/bin.
func Bin() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(real), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server binaries (pg_ctl) on PATH or in /usr/lib/postgresql/*/bin: apt-get install postgresql (hack/deps.sh verify does)")
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Start initialises and starts a server that the test stops at its end.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// StartWith is Start with opts.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := NewWith(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// New initialises and starts a server; Close stops it and removes it.
// For a server shared by a package's tests (TestMain).
func New() (*Server, error) { return NewWith(Options{}) }

// NewWith is New with opts.
func NewWith(opts Options) (*Server, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	// Not t.TempDir: PostgreSQL refuses to run as root, so the server
	// runs as the postgres user, who must reach its directory.
	dir, err := os.MkdirTemp("", "kvpg-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, bin: bin, IP: opts.IP, allow: opts.Allow}
	if s.IP == "" {
		s.IP = "127.0.0.1"
	}
	if err := s.init(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) init() error {
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root, PostgreSQL needs a user to run as: %w (the Debian package creates postgres)", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(s.Dir, uid, gid); err != nil {
			return err
		}
	}
	pw := filepath.Join(s.Dir, "pwfile")
	if err := os.WriteFile(pw, []byte(Password+"\n"), 0o600); err != nil {
		return err
	}
	if s.cred != nil {
		_ = os.Chown(pw, int(s.cred.Uid), int(s.cred.Gid))
	}
	err := s.run("initdb", "-D", s.data(), "-U", User, "--pwfile", pw, "--auth", "scram-sha-256", "-E", "UTF8", "--no-instructions")
	_ = os.Remove(pw)
	if err != nil {
		return err
	}
	if s.allow != "" {
		hba, err := os.OpenFile(filepath.Join(s.data(), "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(hba, "host all all %s scram-sha-256\n", s.allow)
		if cerr := hba.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	if s.Port, err = freePort(s.IP); err != nil {
		return err
	}
	return s.start()
}

// Close stops the server and removes its files.
func (s *Server) Close() {
	_ = s.run("pg_ctl", "-D", s.data(), "-m", "immediate", "-w", "stop")
	_ = os.RemoveAll(s.Dir)
}

func (s *Server) data() string { return filepath.Join(s.Dir, "data") }

// Socket is the directory of the server's Unix socket (a Host for pgx).
func (s *Server) Socket() string { return s.Dir }

// Start starts the server again after Stop.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
}

func (s *Server) start() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=%s -c max_connections=200 -c fsync=on -c synchronous_commit=on", s.Port, s.Dir, s.IP)
	return s.run("pg_ctl", "-D", s.data(), "-l", filepath.Join(s.Dir, "server.log"), "-o", opts, "-w", "-t", "60", "start")
}

// Stop stops the server as a crash would (immediate: no checkpoint,
// connections cut; committed transactions are in the WAL).
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.run("pg_ctl", "-D", s.data(), "-m", "immediate", "-w", "stop"); err != nil {
		t.Fatal(err)
	}
}

// Log is the server's log, for a failing test.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "server.log"))
	return string(b)
}

func (s *Server) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.Dir
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// NewDatabase creates an empty database and returns its name.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name, err := s.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// CreateDatabase creates an empty database and returns its name.
func (s *Server) CreateDatabase() (string, error) {
	name := fmt.Sprintf("kv_%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s dbname=postgres", s.Dir, s.Port, User)+" password="+quote(Password))
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close(ctx) }()
	_, err = conn.Exec(ctx, "CREATE DATABASE "+name)
	return name, err
}

func quote(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `'`, `\'`) + "'"
}

// Config is a pglog configuration for database over the Unix socket.
func (s *Server) Config(database string) pglog.Config {
	return pglog.Config{Host: s.Dir, Port: s.Port, Database: database, User: User, Password: Password, SSLMode: pglog.SSLDisable}
}

// Exec runs SQL on database, for tests that look behind the log's back.
func (s *Server) Exec(t testing.TB, database, sql string, args ...any) {
	t.Helper()
	conn := s.Connect(t, database)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatal(err)
	}
}

// Connect opens a connection to database as the superuser; the caller
// closes it.
func (s *Server) Connect(t testing.TB, database string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s dbname=%s", s.Dir, s.Port, User, database)+" password="+quote(Password))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

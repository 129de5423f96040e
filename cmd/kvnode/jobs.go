package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/backup"
	"github.com/kvstore-operator/kvstore-operator/kvnode/backup/store"
	"github.com/kvstore-operator/kvstore-operator/kvnode/cluster"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

// `kvnode backup` and `kvnode restore` are what the operator's backup and
// restore Jobs run, in the kvnode image: a Job keeps a multi-GB stream
// out of the operator's memory and the S3 credentials in the store's
// namespace. Each prints one backup.Result as JSON on stdout (logs go to
// stderr), and writes it to --result-file, the Job's termination message.

// maxResultError bounds Result.Error: a termination message holds 4096
// bytes, and the rest of the Result must fit too.
const maxResultError = 1024

// jobFlags are the flags both commands share.
type jobFlags struct {
	resultFile                 string
	s3Endpoint, s3CA, s3Region string
	logLevel                   string
}

func (j *jobFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&j.resultFile, "result-file", "", "also write the JSON result to this file (a Job's /dev/termination-log)")
	fs.StringVar(&j.s3Endpoint, "s3-endpoint", "", "URL of the S3 service for s3:// locations: https://host:port or http://host:port; the credentials come from "+backup.EnvS3AccessKeyID+" and "+backup.EnvS3SecretAccessKey)
	fs.StringVar(&j.s3CA, "s3-ca", "", "PEM CA bundle the S3 endpoint's certificate chains to (default: the system's)")
	fs.StringVar(&j.s3Region, "s3-region", store.DefaultRegion, "region of the S3 bucket")
	fs.StringVar(&j.logLevel, "log-level", "info", "debug, info, warn or error (logs go to stderr)")
}

func (j *jobFlags) store() *store.Store {
	return store.New(store.Options{
		S3Endpoint: j.s3Endpoint, S3Region: j.s3Region, S3CA: j.s3CA,
		S3AccessKeyID: os.Getenv(backup.EnvS3AccessKeyID), S3SecretAccessKey: os.Getenv(backup.EnvS3SecretAccessKey),
	})
}

func (j *jobFlags) logger(stderr io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(j.logLevel))
	return slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
}

// report prints res and writes it to --result-file, with err as its
// Error; it returns the exit code.
func (j *jobFlags) report(res backup.Result, err error, stdout, stderr io.Writer) int {
	code := 0
	if err != nil {
		code = 1
		msg := strings.Join(strings.Fields(err.Error()), " ")
		if len(msg) > maxResultError {
			msg = msg[:maxResultError] + "..."
		}
		res.Error = msg
	}
	b, _ := json.Marshal(res)
	fmt.Fprintln(stdout, string(b))
	if j.resultFile != "" {
		if werr := os.WriteFile(j.resultFile, b, 0o644); werr != nil {
			fmt.Fprintln(stderr, "kvnode: the result file:", werr)
			code = 1
		}
	}
	return code
}

// parseJob parses a command's flags; a usage error is reported as a
// Result too, so that a Job's termination message says what was wrong.
func parseJob(fs *flag.FlagSet, j *jobFlags, args []string, stdout, stderr io.Writer) (int, bool) {
	fs.SetOutput(stderr)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0, false
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err != nil {
		return j.report(backup.Result{}, err, stdout, stderr) + 1, false
	}
	return 0, true
}

// signalContext is cancelled by SIGTERM or SIGINT: a Job deleted mid-way
// aborts its upload instead of leaving it to the grace period's SIGKILL.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}

func runBackup(args []string, stdout, stderr io.Writer) int {
	var (
		j                         jobFlags
		server, ca, cert, key, to string
		keepPrefix                string
		keep                      int
	)
	fs := flag.NewFlagSet("kvnode backup", flag.ContinueOnError)
	j.define(fs)
	fs.StringVar(&server, "server", "", "URL of the store's API (https://host:port); the backup is taken by the leader, to which a member redirects")
	fs.StringVar(&ca, "ca", "", "PEM CA bundle that the server's certificate chains to")
	fs.StringVar(&cert, "cert", "", "PEM admin client certificate")
	fs.StringVar(&key, "key", "", "PEM private key of --cert")
	fs.StringVar(&to, "to", "", "where to write the backup: file:///dir/name"+backup.FileExt+" or s3://bucket/prefix/name"+backup.FileExt)
	fs.IntVar(&keep, "keep", 0, "after the backup, keep this many of the newest backups in its directory or prefix whose names start with --keep-prefix and end with "+backup.FileExt+", deleting older ones (names sort by time); 0 keeps all")
	fs.StringVar(&keepPrefix, "keep-prefix", "", "only backups whose names start with this are counted and deleted by --keep")
	fs.Usage = func() {
		fmt.Fprint(stderr, "kvnode backup: fetch a backup of a running store, check it, and store it.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, ok := parseJob(fs, &j, args, stdout, stderr); !ok {
		return code
	}
	res := backup.Result{Location: to}
	var err error
	switch {
	case server == "" || to == "":
		err = errors.New("--server and --to are required")
	case keep < 0:
		err = errors.New("--keep must be at least 0")
	case (cert == "") != (key == ""):
		err = errors.New("--cert and --key go together")
	}
	if err == nil {
		ctx, cancel := signalContext()
		defer cancel()
		b := &backupJob{log: j.logger(stderr), st: j.store(), server: server, to: to}
		err = b.run(ctx, ca, cert, key, &res)
		if err == nil && keep > 0 {
			// The backup is stored and checked: a failed pruning must not
			// fail it (a retried Job would take another), only be said.
			// The next scheduled backup prunes again.
			var perr error
			if res.Pruned, perr = b.prune(ctx, keep, keepPrefix); perr != nil {
				b.log.Warn("retention failed; the backup is stored", "error", perr.Error())
			}
		}
	}
	return j.report(res, err, stdout, stderr)
}

type backupJob struct {
	log        *slog.Logger
	st         *store.Store
	server, to string
}

func (b *backupJob) run(ctx context.Context, ca, cert, key string, res *backup.Result) error {
	to, err := store.Parse(b.to)
	if err != nil {
		return err
	}
	if to.IsDir() || !strings.HasSuffix(to.Path, backup.FileExt) {
		return fmt.Errorf("--to %s: the backup's name must end with %s", b.to, backup.FileExt)
	}
	// A backup never replaces another: a name used twice (a backup
	// object re-created, another store's) would lose the first file.
	if rc, err := b.st.Open(ctx, b.to); err == nil {
		_ = rc.Close()
		return fmt.Errorf("--to %s: a backup is already there; backups are never overwritten: delete it or choose another name", b.to)
	} else if !store.NotFound(err) {
		return fmt.Errorf("--to %s: %w", b.to, err)
	}
	client, err := adminClient(ca, cert, key)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(b.server, "/")+clusterapi.PathBackup, nil)
	if err != nil {
		return fmt.Errorf("--server: %w", err)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("backup request: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("backup request: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	v := newVerifier(resp)
	n, err := b.st.Put(ctx, b.to, v)
	if err != nil {
		// Put stored nothing: the verifier failed the stream's end, or the
		// store failed. Whatever was at the location before is still there
		// (a retried Job's earlier backup under the same name).
		return fmt.Errorf("backup to %s: %w", b.to, err)
	}
	if err := v.result(); err != nil {
		// Not reached while Put reads to the end, where the verifier
		// fails a bad stream; a backup that did not check out must not
		// stay, whatever a store does.
		if derr := b.st.Delete(context.WithoutCancel(ctx), b.to); derr != nil {
			b.log.Warn("could not delete the backup that did not check out", "location", b.to, "error", derr.Error())
		}
		return fmt.Errorf("backup to %s: %w", b.to, err)
	}
	h := v.hdr
	*res = backup.Result{Location: b.to, Size: n, SHA256: v.sum, ClusterID: h.ClusterID, Index: h.Index, Term: h.Term, Keys: h.Keys, CreatedAt: h.CreatedAt}
	b.log.Info("backup stored", "location", b.to, "bytes", n, "keys", h.Keys, "index", h.Index, "seconds", time.Since(start).Seconds())
	return nil
}

// prune deletes the oldest backups next to the new one, beyond keep. Only
// names with the prefix and the extension count; the new backup is never
// deleted, whatever its name.
func (b *backupJob) prune(ctx context.Context, keep int, prefix string) (int, error) {
	to, _ := store.Parse(b.to)
	dir := to.Dir()
	names, err := b.st.List(ctx, dir.String())
	if err != nil {
		return 0, fmt.Errorf("retention: %w", err)
	}
	var ours []string
	for _, n := range names {
		// A name that would not come back unchanged through a location
		// string (an escape, a query, a path) is never ours: deleting it
		// could delete another file.
		if strings.HasPrefix(n, prefix) && strings.HasSuffix(n, backup.FileExt) && !strings.ContainsAny(n, "%?#/\\") {
			ours = append(ours, n)
		}
	}
	slices.Sort(ours)
	pruned := 0
	for _, n := range ours[:max(0, len(ours)-keep)] {
		if dir.Join(n) == to {
			continue
		}
		if err := b.st.Delete(ctx, dir.Join(n).String()); err != nil {
			return pruned, fmt.Errorf("retention: %w", err)
		}
		b.log.Info("deleted an old backup", "location", dir.Join(n).String())
		pruned++
	}
	return pruned, nil
}

// adminClient calls the store's API with the admin certificate. It has
// no overall timeout: a large backup streams for minutes.
func adminClient(ca, cert, key string) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s holds no PEM certificate", ca)
		}
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("--cert, --key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	// The leader takes a snapshot before it answers. A server that stops
	// answering (a wedged leader whose kernel still accepts connections)
	// must fail the attempt, not hang the Job: the dial, the handshake and
	// idle HTTP/2 connections have deadlines.
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}
	tr := &http.Transport{TLSClientConfig: cfg, DialContext: d.DialContext, TLSHandshakeTimeout: 15 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute, ForceAttemptHTTP2: true,
		// A stream that stops arriving: a ping after 30 s of silence,
		// and the connection closed if it goes unanswered for 15 s.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second}}
	return &http.Client{Transport: tr}, nil
}

// verifier passes a backup's stream through and checks it on the way
// (backup.Verify, in a goroutine, over a pipe). At the end of the stream
// it answers io.EOF only when the backup is whole and its checksum is the
// one the server sent in its trailer; otherwise an error, so that the
// store never completes the write. A backup found damaged earlier fails
// the next read.
type verifier struct {
	resp *http.Response
	pw   *io.PipeWriter
	done chan struct{}
	// Set before done is closed.
	hdr backup.Header
	sum string
	err error
}

func newVerifier(resp *http.Response) *verifier {
	pr, pw := io.Pipe()
	v := &verifier{resp: resp, pw: pw, done: make(chan struct{})}
	go func() {
		defer close(v.done)
		v.hdr, v.sum, v.err = backup.Verify(bufio.NewReaderSize(pr, 1<<20))
		if v.err == nil {
			v.err = v.checkTrailer()
		}
		if v.err != nil {
			// Unblocks the writer, which then fails.
			_ = pr.CloseWithError(v.err)
		}
	}()
	return v
}

// checkTrailer runs after Verify, which returns only once it has read the
// stream's end: by then the client has read the trailer.
func (v *verifier) checkTrailer() error {
	want := v.resp.Trailer.Get(backup.TrailerSHA256)
	switch {
	case want == "":
		return fmt.Errorf("%w: the server sent no %s trailer: it did not finish the backup", backup.ErrCorrupt, backup.TrailerSHA256)
	case want != v.sum:
		return fmt.Errorf("%w: the server's checksum %s is not the stream's %s", backup.ErrCorrupt, want, v.sum)
	}
	return nil
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.resp.Body.Read(p)
	if n > 0 {
		if _, werr := v.pw.Write(p[:n]); werr != nil {
			<-v.done
			return 0, v.err
		}
	}
	switch {
	case errors.Is(err, io.EOF):
		_ = v.pw.Close()
		if rerr := v.result(); rerr != nil {
			return 0, rerr
		}
	case err != nil:
		err = fmt.Errorf("reading the backup from the server: %w", err)
		_ = v.pw.CloseWithError(err)
	}
	return n, err
}

// result waits for the check and returns its error.
func (v *verifier) result() error {
	<-v.done
	return v.err
}

func runRestore(args []string, stdout, stderr io.Writer) int {
	var (
		j                     jobFlags
		from, dataDir, nodeID string
		peerAdvertise, sha    string
	)
	fs := flag.NewFlagSet("kvnode restore", flag.ContinueOnError)
	j.define(fs)
	fs.StringVar(&from, "from", "", "the backup: file:///dir/name"+backup.FileExt+" or s3://bucket/prefix/name"+backup.FileExt)
	fs.StringVar(&dataDir, "data-dir", "", "the data directory to restore into: empty, or holding this very restore (then nothing is done)")
	fs.StringVar(&nodeID, "node-id", "", "the node ID the node serving this data directory will have (the pod name)")
	fs.StringVar(&peerAdvertise, "peer-advertise", "", "the peer address that node will advertise (host:port); the restored configuration records it")
	fs.StringVar(&sha, "expect-sha256", "", "the SHA-256 the backup must have (as recorded when it was taken); another file at the location is refused before anything is restored")
	fs.Usage = func() {
		fmt.Fprint(stderr, `kvnode restore: check a backup and restore it, offline, into an empty data
directory. A kvnode started there afterwards, with the same --node-id and
--peer-advertise, leads a new one-member cluster holding the backup's data.

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseJob(fs, &j, args, stdout, stderr); !ok {
		return code
	}
	res := backup.Result{Location: from}
	var err error
	if from == "" || dataDir == "" || nodeID == "" || peerAdvertise == "" {
		err = errors.New("--from, --data-dir, --node-id and --peer-advertise are required")
	} else {
		ctx, cancel := signalContext()
		defer cancel()
		r := &restoreJob{log: j.logger(stderr), st: j.store(), from: from, sha: strings.ToLower(sha),
			cfg: cluster.Config{NodeID: nodeID, DataDir: dataDir, PeerAdvertise: peerAdvertise, RestoreFrom: from}}
		r.cfg.Logger = cluster.SlogLogger(r.log, "restore")
		err = r.run(ctx, &res)
	}
	return j.report(res, err, stdout, stderr)
}

type restoreJob struct {
	log  *slog.Logger
	st   *store.Store
	from string
	// sha is the checksum the backup must have; "" checks only the
	// file's own.
	sha string
	cfg cluster.Config
}

// downloadName is the backup's copy in the data directory while it is
// restored. One name: a run cut short leaves one file, which the next
// overwrites.
const downloadName = "restore-download" + backup.FileExt + ".part"

func (r *restoreJob) run(ctx context.Context, res *backup.Result) error {
	// A copy a run killed before it could remove it (the restore done or
	// not) must not stay on the volume: the next run makes its own.
	if err := os.Remove(filepath.Join(r.cfg.DataDir, downloadName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restore: %w", err)
	}
	hdr, err := r.header(ctx)
	if err != nil {
		return err
	}
	// Asked before the download, which may be large and lands on the
	// volume in question.
	done, err := cluster.CheckRestore(r.cfg, hdr)
	if err != nil {
		return err
	}
	if done.Already {
		if r.sha != "" && done.SHA256 != r.sha {
			return fmt.Errorf("restore from %s: the data directory holds a restore of a file with SHA-256 %s, not %s", r.from, done.SHA256, r.sha)
		}
		r.log.Info("the data directory holds this restore already; nothing to do", "dataDir", r.cfg.DataDir)
		r.fill(res, done, 0)
		return nil
	}
	tmp := filepath.Join(r.cfg.DataDir, downloadName)
	defer func() { _ = os.Remove(tmp) }()
	start := time.Now()
	size, sum, err := r.download(ctx, tmp)
	if err != nil {
		return err
	}
	if r.sha != "" && sum != r.sha {
		return fmt.Errorf("restore from %s: the file has SHA-256 %s, but the backup recorded %s: it was replaced since; nothing was restored", r.from, sum, r.sha)
	}
	r.log.Info("backup fetched and checked", "from", r.from, "bytes", size, "seconds", time.Since(start).Seconds())
	cfg := r.cfg
	cfg.RestoreFrom = tmp
	restored, err := cluster.Restore(cfg)
	if err != nil {
		// The error names the temporary copy; the user knows the location.
		return fmt.Errorf("restore from %s: %w", r.from, err)
	}
	if err := os.Remove(tmp); err != nil {
		return err
	}
	r.log.Info("restored", "from", r.from, "keys", restored.Backup.Keys, "index", restored.Backup.Index, "seconds", time.Since(start).Seconds())
	r.fill(res, restored, size)
	return nil
}

func (r *restoreJob) fill(res *backup.Result, d cluster.Restored, size int64) {
	h := d.Backup
	*res = backup.Result{Location: r.from, Size: size, SHA256: d.SHA256, ClusterID: h.ClusterID, Index: h.Index, Term: h.Term, Keys: h.Keys, CreatedAt: h.CreatedAt}
}

// header reads the backup's header only.
func (r *restoreJob) header(ctx context.Context) (backup.Header, error) {
	rc, err := r.st.Open(ctx, r.from)
	if err != nil {
		return backup.Header{}, fmt.Errorf("restore from %s: %w", r.from, err)
	}
	defer func() { _ = rc.Close() }()
	b, err := backup.Open(rc)
	if err != nil {
		return backup.Header{}, fmt.Errorf("restore from %s: %w", r.from, err)
	}
	return b.Header(), nil
}

// download copies the backup to path, checking it on the way, and syncs
// it. A damaged backup fails here, before anything is restored.
func (r *restoreJob) download(ctx context.Context, path string) (int64, string, error) {
	rc, err := r.st.Open(ctx, r.from)
	if err != nil {
		return 0, "", fmt.Errorf("restore from %s: %w", r.from, err)
	}
	defer func() { _ = rc.Close() }()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, "", fmt.Errorf("restore: %w", err)
	}
	cw := &countingWriter{w: f}
	_, sum, err := backup.Verify(bufio.NewReaderSize(io.TeeReader(rc, cw), 1<<20))
	if cw.err != nil {
		// Verify saw it as a read error; it is the volume's.
		err = fmt.Errorf("writing the copy to %s: %w", path, cw.err)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, "", fmt.Errorf("restore from %s: %w", r.from, err)
	}
	return cw.n, sum, nil
}

type countingWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil {
		c.err = err
	}
	return n, err
}

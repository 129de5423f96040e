// Package store owns where backup files live: a location is a URI, either
// a file in a directory (file:///dir/name.kvbackup, a volume mounted in
// the pod) or an object in S3-compatible storage
// (s3://bucket/prefix/name.kvbackup). It puts a stream there so that no
// partial backup is ever found under the final name, reads it back, lists
// a directory or prefix for retention, and deletes. It knows nothing of
// the backup format (package backup).
//
// Credentials come in Options and never appear in what this package
// returns or logs.
package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// DefaultPartSize is the size of the parts of an S3 upload. A stream of
// unknown length is uploaded one part at a time, so it is also about the
// memory an upload holds.
const DefaultPartSize = 16 << 20

// DefaultRegion is the region asked for when none is given; S3-compatible
// servers other than AWS mostly ignore it.
const DefaultRegion = "us-east-1"

// Schemes of locations.
const (
	SchemeFile = "file"
	SchemeS3   = "s3"
)

// Options configure S3 locations; file locations need none.
type Options struct {
	// S3Endpoint is the service's URL: https://host:port, or http://.
	S3Endpoint string
	// S3Region is the bucket's region (DefaultRegion when empty).
	S3Region string
	// S3CA is a PEM file of the CAs the endpoint's certificate chains to;
	// empty means the system's roots.
	S3CA string
	// S3AccessKeyID and S3SecretAccessKey are the credentials.
	S3AccessKeyID, S3SecretAccessKey string
	// PartSize is the size of an upload's parts (DefaultPartSize when 0).
	PartSize uint64
}

// Location is a parsed location.
type Location struct {
	Scheme string
	// Bucket is the S3 bucket; empty for a file.
	Bucket string
	// Path is the file's absolute path, or the S3 object's key. A
	// directory location ends with "/" (an S3 prefix: "" for the
	// bucket's top).
	Path string
}

// Parse reads a location: file:///abs/path or s3://bucket/key.
func Parse(loc string) (Location, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return Location{}, fmt.Errorf("store: location %q: %w", loc, err)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Location{}, fmt.Errorf("store: location %q: user info, a query or a fragment has no meaning here", loc)
	}
	switch u.Scheme {
	case SchemeFile:
		if u.Host != "" && u.Host != "localhost" {
			return Location{}, fmt.Errorf("store: location %q: a file location names no host (file:///dir/name)", loc)
		}
		if p := strings.TrimSuffix(u.Path, "/"); !path.IsAbs(u.Path) || p != "" && path.Clean(p) != p {
			return Location{}, fmt.Errorf("store: location %q: the path must be absolute and clean", loc)
		}
		return Location{Scheme: SchemeFile, Path: u.Path}, nil
	case SchemeS3:
		key := strings.TrimPrefix(u.Path, "/")
		if u.Host == "" {
			return Location{}, fmt.Errorf("store: location %q: no bucket (s3://bucket/key)", loc)
		}
		if strings.Contains(key, "//") || slices.Contains(strings.Split(key, "/"), "..") {
			return Location{}, fmt.Errorf("store: location %q: empty or .. segments in the key", loc)
		}
		return Location{Scheme: SchemeS3, Bucket: u.Host, Path: key}, nil
	}
	return Location{}, fmt.Errorf("store: location %q: the scheme must be file:// or s3://", loc)
}

func (l Location) String() string {
	if l.Scheme == SchemeS3 {
		return "s3://" + l.Bucket + "/" + l.Path
	}
	return "file://" + l.Path
}

// IsDir reports whether l names a directory or a prefix.
func (l Location) IsDir() bool { return l.Path == "" || strings.HasSuffix(l.Path, "/") }

// Dir is the directory (the prefix) l is in.
func (l Location) Dir() Location {
	d := l
	d.Path = l.Path[:strings.LastIndex(l.Path, "/")+1]
	return d
}

// Join names name in the directory l.
func (l Location) Join(name string) Location {
	f := l
	f.Path = l.Path + name
	return f
}

// Store reaches locations.
type Store struct {
	opts Options

	once  sync.Once
	s3    *minio.Client
	s3Err error
}

// New returns a store. S3 options are checked when an S3 location is
// first used, so that file locations need none.
func New(opts Options) *Store {
	if opts.S3Region == "" {
		opts.S3Region = DefaultRegion
	}
	if opts.PartSize == 0 {
		opts.PartSize = DefaultPartSize
	}
	return &Store{opts: opts}
}

func (s *Store) parse(loc string, dir bool) (Location, error) {
	l, err := Parse(loc)
	if err != nil {
		return l, err
	}
	if l.IsDir() != dir {
		if dir {
			return l, fmt.Errorf("store: %s is not a directory (a location ending with /)", loc)
		}
		return l, fmt.Errorf("store: %s names a directory, not a file", loc)
	}
	return l, nil
}

// Put stores what r yields at loc, and returns how many bytes that was.
// Nothing is found at loc unless the whole stream was stored: a file is
// written under a temporary name, synced and renamed; an S3 upload is
// multipart, and completed only after r's end. An error from r (the
// caller's way to reject the stream at its end) fails the Put.
func (s *Store) Put(ctx context.Context, loc string, r io.Reader) (int64, error) {
	l, err := s.parse(loc, false)
	if err != nil {
		return 0, err
	}
	if l.Scheme == SchemeFile {
		return putFile(l.Path, r)
	}
	c, err := s.client()
	if err != nil {
		return 0, err
	}
	cr := &countingReader{r: r}
	// Size -1: a multipart upload, one part in memory at a time; minio
	// aborts it when a part or the stream fails, and completes it (the
	// object appears) only after the stream's end.
	_, err = c.PutObject(ctx, l.Bucket, l.Path, cr, -1, minio.PutObjectOptions{PartSize: s.opts.PartSize})
	if err != nil {
		if cr.err != nil {
			// The stream's own error, not the upload's.
			return cr.n, cr.err
		}
		return cr.n, s.fail("put", l, err)
	}
	if !cr.eof {
		// minio completes an upload of unknown size at its part limit
		// (10,000 parts) without reading on: the object is cut short.
		_ = c.RemoveObject(context.WithoutCancel(ctx), l.Bucket, l.Path, minio.RemoveObjectOptions{})
		return cr.n, fmt.Errorf("store: %s: the stream is longer than an upload of %d-byte parts can hold (%d bytes sent); nothing was kept", l, s.partSize(), cr.n)
	}
	return cr.n, nil
}

func (s *Store) partSize() uint64 {
	if s.opts.PartSize == 0 {
		return DefaultPartSize
	}
	return s.opts.PartSize
}

// countingReader counts what it passes on, and keeps the source's error.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
	eof bool // the stream was read to its end
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if errors.Is(err, io.EOF) {
		c.eof = true
	} else if err != nil {
		c.err = err
	}
	return n, err
}

func putFile(name string, r io.Reader) (n int64, err error) {
	dir := filepath.Dir(name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	// A dot and a .tmp suffix: a leftover from a crash never matches a
	// backup's name.
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".*.tmp")
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	n, err = io.Copy(f, r)
	if err != nil {
		return n, err
	}
	if err = f.Sync(); err != nil {
		return n, fmt.Errorf("store: %w", err)
	}
	if err = f.Close(); err != nil {
		return n, fmt.Errorf("store: %w", err)
	}
	if err = os.Rename(f.Name(), name); err != nil {
		return n, fmt.Errorf("store: %w", err)
	}
	if err = syncDir(dir); err != nil {
		return n, fmt.Errorf("store: %w", err)
	}
	return n, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Open reads what is stored at loc. The caller closes it.
func (s *Store) Open(ctx context.Context, loc string) (io.ReadCloser, error) {
	l, err := s.parse(loc, false)
	if err != nil {
		return nil, err
	}
	if l.Scheme == SchemeFile {
		f, err := os.Open(l.Path)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		return f, nil
	}
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	obj, err := c.GetObject(ctx, l.Bucket, l.Path, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.fail("get", l, err)
	}
	// GetObject only prepares the request: Stat makes it, so that a
	// missing object or a refusal is told here, not at the first read.
	if _, err := obj.Stat(); err != nil {
		_ = obj.Close()
		return nil, s.fail("get", l, err)
	}
	return &objectReader{obj: obj, s: s, l: l}, nil
}

// objectReader keeps credentials out of errors met while reading.
type objectReader struct {
	obj *minio.Object
	s   *Store
	l   Location
}

func (o *objectReader) Read(p []byte) (int, error) {
	n, err := o.obj.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = o.s.fail("read", o.l, err)
	}
	return n, err
}

func (o *objectReader) Close() error { return o.obj.Close() }

// List returns the names of the files directly in the directory dirLoc
// (a location ending with /), sorted.
func (s *Store) List(ctx context.Context, dirLoc string) ([]string, error) {
	l, err := s.parse(dirLoc, true)
	if err != nil {
		return nil, err
	}
	var names []string
	if l.Scheme == SchemeFile {
		entries, err := os.ReadDir(l.Path)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		for _, e := range entries {
			if e.Type().IsRegular() {
				names = append(names, e.Name())
			}
		}
		return names, nil
	}
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	for obj := range c.ListObjects(ctx, l.Bucket, minio.ListObjectsOptions{Prefix: l.Path}) {
		if obj.Err != nil {
			return nil, s.fail("list", l, obj.Err)
		}
		// Without Recursive, deeper keys come as one "sub/" entry each.
		if name := strings.TrimPrefix(obj.Key, l.Path); name != "" && !strings.Contains(name, "/") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// Delete removes what is stored at loc. Nothing there is not an error.
func (s *Store) Delete(ctx context.Context, loc string) error {
	l, err := s.parse(loc, false)
	if err != nil {
		return err
	}
	if l.Scheme == SchemeFile {
		if err := os.Remove(l.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("store: %w", err)
		}
		if err := syncDir(filepath.Dir(l.Path)); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		return nil
	}
	c, err := s.client()
	if err != nil {
		return err
	}
	if err := c.RemoveObject(ctx, l.Bucket, l.Path, minio.RemoveObjectOptions{}); err != nil {
		return s.fail("delete", l, err)
	}
	return nil
}

func (s *Store) client() (*minio.Client, error) {
	s.once.Do(func() { s.s3, s.s3Err = s.newClient() })
	return s.s3, s.s3Err
}

func (s *Store) newClient() (*minio.Client, error) {
	o := s.opts
	if o.S3Endpoint == "" {
		return nil, errors.New("store: an s3:// location needs an S3 endpoint")
	}
	if o.S3AccessKeyID == "" || o.S3SecretAccessKey == "" {
		return nil, errors.New("store: an s3:// location needs S3 credentials (an access key ID and a secret access key)")
	}
	u, err := url.Parse(o.S3Endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		shown := o.S3Endpoint
		if u != nil {
			shown = u.Redacted() // never a password given in the URL
		}
		return nil, fmt.Errorf("store: the S3 endpoint %q is not https://host[:port] or http://host[:port]", shown)
	}
	secure := u.Scheme == "https"
	transport, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if o.S3CA != "" {
		pem, err := os.ReadFile(o.S3CA)
		if err != nil {
			return nil, fmt.Errorf("store: the S3 CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("store: the S3 CA %s holds no PEM certificate", o.S3CA)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:     credentials.NewStaticV4(o.S3AccessKeyID, o.S3SecretAccessKey, ""),
		Secure:    secure,
		Region:    o.S3Region,
		Transport: transport,
		// A Job that fails is retried by its own backoff; minio's default
		// of ten retries would keep an unreachable endpoint's failure
		// from being told for minutes.
		MaxRetries: 3,
	})
	if err != nil {
		return nil, s.fail("connect", Location{Scheme: SchemeS3}, err)
	}
	return c, nil
}

// fail words an S3 error: the server's code and message, never the
// credentials (a server could echo the access key, and a transport error
// could carry anything).
func (s *Store) fail(op string, l Location, err error) error {
	msg := err.Error()
	if r := minio.ToErrorResponse(err); r.Code != "" {
		msg = fmt.Sprintf("%s (HTTP %d %s)", r.Message, r.StatusCode, r.Code)
	}
	for _, secret := range []string{s.opts.S3SecretAccessKey, s.opts.S3AccessKeyID} {
		if secret != "" {
			msg = strings.ReplaceAll(msg, secret, "[redacted]")
		}
	}
	msg = strings.ReplaceAll(msg, "\n", " ")
	return &Error{Op: op, Location: l.String(), Msg: msg, Status: minio.ToErrorResponse(err).StatusCode}
}

// Error is an S3 request that failed.
type Error struct {
	Op, Location, Msg string
	// Status is the HTTP status of the server's answer, 0 if none came.
	Status int
}

func (e *Error) Error() string { return fmt.Sprintf("s3 %s %s: %s", e.Op, e.Location, e.Msg) }

// NotFound reports whether err says that nothing is stored at a location.
func NotFound(err error) bool {
	var e *Error
	return errors.Is(err, os.ErrNotExist) || errors.As(err, &e) && e.Status == http.StatusNotFound
}

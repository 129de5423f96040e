package store

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for loc, want := range map[string]Location{
		"file:///backups/a.kvbackup":    {Scheme: SchemeFile, Path: "/backups/a.kvbackup"},
		"file:///backups/":              {Scheme: SchemeFile, Path: "/backups/"},
		"s3://bkt/prod/a.kvbackup":      {Scheme: SchemeS3, Bucket: "bkt", Path: "prod/a.kvbackup"},
		"s3://bkt/a.kvbackup":           {Scheme: SchemeS3, Bucket: "bkt", Path: "a.kvbackup"},
		"s3://bkt/":                     {Scheme: SchemeS3, Bucket: "bkt", Path: ""},
		"file://localhost/b/a.kvbackup": {Scheme: SchemeFile, Path: "/b/a.kvbackup"},
	} {
		got, err := Parse(loc)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", loc, got, err, want)
		}
	}
	for _, loc := range []string{"/backups/a", "file://host/a", "file:///a/../b", "file://a.kvbackup", "s3:///key", "s3://bkt/a//b", "s3://bkt/../b", "http://x/y", "s3://user:pass@bkt/a", "s3://bkt/a?x=1"} {
		if l, err := Parse(loc); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", loc, l)
		}
	}
	l, _ := Parse("s3://bkt/prod/a.kvbackup")
	if d := l.Dir(); d.String() != "s3://bkt/prod/" || !d.IsDir() || d.Join("b").String() != "s3://bkt/prod/b" {
		t.Errorf("Dir of %v = %v", l, d)
	}
}

type failing struct{ n int }

func (f *failing) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("rejected at the end")
	}
	f.n--
	return copy(p, "data"), nil
}

// A file appears under its name only whole: a stream that fails leaves
// nothing, not even the temporary file, and a failed put over an existing
// file leaves that file as it was.
func TestFilePutListDelete(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := New(Options{})
	loc := "file://" + filepath.Join(dir, "sub", "a.kvbackup")
	if _, err := s.Put(ctx, loc, &failing{n: 3}); err == nil || !strings.Contains(err.Error(), "rejected") {
		t.Fatalf("Put of a failing stream: %v", err)
	}
	if e, _ := os.ReadDir(filepath.Join(dir, "sub")); len(e) > 0 {
		t.Fatalf("a failed Put left %v", e)
	}
	if n, err := s.Put(ctx, loc, strings.NewReader("backup")); err != nil || n != 6 {
		t.Fatalf("Put = %d, %v", n, err)
	}
	if _, err := s.Put(ctx, loc, &failing{n: 1}); err == nil {
		t.Fatal("Put of a failing stream succeeded")
	}
	rc, err := s.Open(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "backup" {
		t.Fatalf("after a failed Put over it, the file holds %q", b)
	}
	if _, err := s.Put(ctx, "file://"+filepath.Join(dir, "sub", "b.kvbackup"), strings.NewReader("b")); err != nil {
		t.Fatal(err)
	}
	if names, err := s.List(ctx, "file://"+filepath.Join(dir, "sub")+"/"); err != nil || !slices.Equal(names, []string{"a.kvbackup", "b.kvbackup"}) {
		t.Fatalf("List = %v, %v", names, err)
	}
	if err := s.Delete(ctx, loc); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, loc); err != nil {
		t.Fatalf("deleting what is not there: %v", err)
	}
	if _, err := s.Open(ctx, loc); !NotFound(err) {
		t.Fatalf("Open of a deleted file: %v", err)
	}
}

// An S3 error never carries the credentials, whatever the server or the
// transport put in it.
func TestS3ErrorsHoldNoCredentials(t *testing.T) {
	s := New(Options{S3AccessKeyID: "AKID123", S3SecretAccessKey: "s3cr3t-value"})
	l, _ := Parse("s3://bkt/a.kvbackup")
	err := s.fail("put", l, errors.New("server said: key AKID123 secret s3cr3t-value\nsecond line"))
	if msg := err.Error(); strings.Contains(msg, "AKID123") || strings.Contains(msg, "s3cr3t-value") || strings.Contains(msg, "\n") {
		t.Fatalf("error %q", msg)
	}
	if _, err := New(Options{S3Endpoint: "http://127.0.0.1:1"}).Open(context.Background(), "s3://bkt/a.kvbackup"); err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("S3 without credentials: %v", err)
	}
}

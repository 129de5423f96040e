package cluster

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestSlogLoggerWritesOneSchema(t *testing.T) {
	var buf bytes.Buffer
	l := SlogLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), "raft")
	l.Named("transport").With("peer", "kv-1").Warn("failed to contact", "error", "refused")
	l.Debug("hidden at info")
	l.Info("configuration", "servers", hclog.Fmt("%+v", []int{1, 2}))
	l.StandardLogger(nil).Print("[ERR] raft: oops")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], `"servers":"[1 2]"`) {
		t.Fatalf("lines: %q", lines)
	}
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[2]), &second); err != nil {
		t.Fatal(err)
	}
	if first["level"] != "WARN" || first["msg"] != "failed to contact" || first["module"] != "raft.transport" || first["peer"] != "kv-1" || first["error"] != "refused" {
		t.Fatalf("first line %v", first)
	}
	if strings.Count(lines[0], `"module"`) != 1 {
		t.Fatalf("module appears twice: %s", lines[0])
	}
	if second["level"] != "ERROR" || second["msg"] != "raft: oops" {
		t.Fatalf("second line %v", second)
	}
}

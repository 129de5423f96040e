package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// SlogLogger adapts slog to the hclog interface raft logs through, so that
// a node writes one JSON schema (slog's) to stdout instead of two.
func SlogLogger(l *slog.Logger, name string) hclog.Logger {
	return &slogLogger{base: l, l: l.With("module", name), name: name}
}

type slogLogger struct {
	base    *slog.Logger // without module and implied arguments
	l       *slog.Logger
	name    string
	implied []any
}

var _ hclog.Logger = (*slogLogger)(nil)

func level(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (s *slogLogger) Log(l hclog.Level, msg string, args ...any) {
	for i, a := range args {
		// hclog.Fmt values are a format and its arguments.
		if f, ok := a.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				args[i] = fmt.Sprintf(format, f[1:]...)
			}
		}
	}
	s.l.Log(context.Background(), level(l), msg, args...)
}
func (s *slogLogger) Trace(msg string, args ...any) { s.Log(hclog.Trace, msg, args...) }
func (s *slogLogger) Debug(msg string, args ...any) { s.Log(hclog.Debug, msg, args...) }
func (s *slogLogger) Info(msg string, args ...any)  { s.Log(hclog.Info, msg, args...) }
func (s *slogLogger) Warn(msg string, args ...any)  { s.Log(hclog.Warn, msg, args...) }
func (s *slogLogger) Error(msg string, args ...any) { s.Log(hclog.Error, msg, args...) }

func (s *slogLogger) enabled(l hclog.Level) bool { return s.l.Enabled(context.Background(), level(l)) }
func (s *slogLogger) IsTrace() bool              { return s.enabled(hclog.Trace) }
func (s *slogLogger) IsDebug() bool              { return s.enabled(hclog.Debug) }
func (s *slogLogger) IsInfo() bool               { return s.enabled(hclog.Info) }
func (s *slogLogger) IsWarn() bool               { return s.enabled(hclog.Warn) }
func (s *slogLogger) IsError() bool              { return s.enabled(hclog.Error) }

func (s *slogLogger) ImpliedArgs() []any { return s.implied }
func (s *slogLogger) With(args ...any) hclog.Logger {
	return &slogLogger{base: s.base, l: s.l.With(args...), name: s.name, implied: append(append([]any(nil), s.implied...), args...)}
}
func (s *slogLogger) Name() string { return s.name }
func (s *slogLogger) Named(name string) hclog.Logger {
	if s.name != "" {
		name = s.name + "." + name
	}
	return s.ResetNamed(name)
}
func (s *slogLogger) ResetNamed(name string) hclog.Logger {
	// slog attributes cannot be replaced: start again from the base.
	return &slogLogger{base: s.base, l: s.base.With(append([]any{"module", name}, s.implied...)...), name: name, implied: s.implied}
}

// SetLevel is ignored: the slog handler's level, set from --log-level, rules.
func (s *slogLogger) SetLevel(hclog.Level) {}
func (s *slogLogger) GetLevel() hclog.Level {
	switch {
	case s.IsDebug():
		return hclog.Debug
	case s.IsInfo():
		return hclog.Info
	case s.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}

func (s *slogLogger) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return log.New(s.StandardWriter(nil), "", 0)
}
func (s *slogLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer { return lineWriter{s} }

type lineWriter struct{ s *slogLogger }

func (w lineWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	lvl := hclog.Info
	for prefix, l := range map[string]hclog.Level{"[ERR]": hclog.Error, "[ERROR]": hclog.Error, "[WARN]": hclog.Warn, "[DEBUG]": hclog.Debug, "[TRACE]": hclog.Trace} {
		if strings.HasPrefix(msg, prefix) {
			lvl, msg = l, strings.TrimSpace(strings.TrimPrefix(msg, prefix))
			break
		}
	}
	w.s.Log(lvl, msg)
	return len(p), nil
}

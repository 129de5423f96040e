package main

import (
	"errors"
	"flag"
	"io"
	"slices"
	"testing"
)

// Flags may come before or after the arguments; after "--" a value that
// starts with "-" is an argument.
func TestFlagsAnywhere(t *testing.T) {
	for _, c := range []struct {
		args []string
		pos  []string
		grpc bool
	}{
		{[]string{"k", "v", "--grpc"}, []string{"k", "v"}, true},
		{[]string{"--grpc", "k", "v"}, []string{"k", "v"}, true},
		{[]string{"k", "--grpc", "v"}, []string{"k", "v"}, true},
		{[]string{"k", "-"}, []string{"k", "-"}, false},
		{[]string{"--", "k", "--grpc"}, []string{"k", "--grpc"}, false},
		{[]string{"k", "--", "-v"}, []string{"k", "-v"}, false},
	} {
		var o options
		fs := flags("put", &o)
		fs.SetOutput(io.Discard)
		pos, err := parseInterspersed(fs, c.args)
		if err != nil || !slices.Equal(pos, c.pos) || o.grpc != c.grpc {
			t.Errorf("%q: %q grpc=%v %v; want %q grpc=%v", c.args, pos, o.grpc, err, c.pos, c.grpc)
		}
	}
	var o options
	if _, err := parseInterspersed(flags("get", &o), []string{"k", "--nope"}); err == nil || errors.Is(err, flag.ErrHelp) {
		t.Errorf("an unknown flag after the arguments: %v", err)
	}
}

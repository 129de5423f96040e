// Command kvctl is the command-line client of a KeyValueStore: the book's
// CLI client, grown up, on package client (TLS and mutual TLS from a
// client Secret's files, a timeout per call, retries of what is safe to
// retry). It is in the kvnode image, so a pod of that image that mounts a
// client Secret is a client at once:
//
//	kubectl exec demo-client -- /kvctl put greeting 'Hello, key-value store!'
//	kubectl exec demo-client -- /kvctl get greeting
//
// See kvctl --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/client"
	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
)

const usage = `Usage: kvctl COMMAND [flags] ARGS  (flags may also follow ARGS; after -- all is ARGS)

Commands:
  get KEY           print the value of KEY (exit status 3 when it has none)
  put KEY VALUE     set KEY to VALUE; VALUE "-" reads it from standard input
  delete KEY        remove KEY (also when it has no value)
  list [PREFIX]     print the keys that start with PREFIX, one per line
  idle              do nothing until stopped: the command of a client pod
                    that people kubectl exec into (the image has no shell)

Flags (every command; an environment variable sets the default):
`

// Exit statuses besides 0.
const (
	exitFailed   = 1
	exitUsage    = 2
	exitNotFound = 3
)

type options struct {
	endpoints   string
	tlsDir      string
	ca          string
	cert        string
	key         string
	timeout     time.Duration
	attempts    int
	consistency string
	limit       int
	grpc        bool
}

func flags(name string, o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("kvctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	env := func(k, def string) string {
		if v, ok := os.LookupEnv(k); ok {
			return v
		}
		return def
	}
	fs.StringVar(&o.endpoints, "endpoint", env("KV_ENDPOINT", "https://localhost:8080"), "the store's URL, e.g. https://demo.default.svc:8080; several separated by commas ($KV_ENDPOINT)")
	fs.StringVar(&o.tlsDir, "tls-dir", env("KV_TLS_DIR", ""), "a mounted client Secret: ca.crt, tls.crt, tls.key ($KV_TLS_DIR)")
	fs.StringVar(&o.ca, "ca", env("KV_CA", ""), "CA bundle of the store, instead of the one in --tls-dir ($KV_CA)")
	fs.StringVar(&o.cert, "cert", env("KV_CERT", ""), "client certificate, instead of the one in --tls-dir ($KV_CERT)")
	fs.StringVar(&o.key, "key", env("KV_KEY", ""), "client key, instead of the one in --tls-dir ($KV_KEY)")
	timeout, err := time.ParseDuration(env("KV_TIMEOUT", client.DefaultTimeout.String()))
	if err != nil {
		timeout = client.DefaultTimeout
	}
	fs.DurationVar(&o.timeout, "timeout", timeout, "how long a command may take, retries included ($KV_TIMEOUT)")
	fs.IntVar(&o.attempts, "attempts", client.DefaultMaxAttempts, "how often a request is sent at most (1: no retries)")
	fs.StringVar(&o.consistency, "consistency", string(keyapi.Linearizable), "of get and list: linearizable, strict or stale")
	fs.IntVar(&o.limit, "limit", 0, "of list: print at most this many keys (0: all)")
	useGRPC := env("KV_GRPC", "false") == "true"
	fs.BoolVar(&o.grpc, "grpc", useGRPC, "speak gRPC (the endpoint's port is then the gRPC one, 50051) instead of REST ($KV_GRPC=true)")
	return fs
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return 0
	}
	cmd := args[0]
	var o options
	fs := flags(cmd, &o)
	rest, err := parseInterspersed(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stderr)
			return 0
		}
		fmt.Fprintf(stderr, "kvctl %s: %v (see kvctl --help)\n", cmd, err)
		return exitUsage
	}
	want := map[string][2]int{"get": {1, 1}, "put": {2, 2}, "delete": {1, 1}, "list": {0, 1}, "idle": {0, 0}}
	n, ok := want[cmd]
	if !ok {
		fmt.Fprintf(stderr, "kvctl: unknown command %q (see kvctl --help)\n", cmd)
		return exitUsage
	}
	if len(rest) < n[0] || len(rest) > n[1] {
		fmt.Fprintf(stderr, "kvctl %s: wrong number of arguments (see kvctl --help)\n", cmd)
		return exitUsage
	}
	if cmd == "idle" {
		idle()
		return 0
	}
	cons := keyapi.Consistency(o.consistency)
	switch cons {
	case keyapi.Linearizable, keyapi.Strict, keyapi.Stale:
	default:
		fmt.Fprintf(stderr, "kvctl %s: --consistency must be linearizable, strict or stale, not %q\n", cmd, o.consistency)
		return exitUsage
	}
	protocol := client.REST
	if o.grpc {
		protocol = client.GRPC
	}
	c, err := client.New(client.Config{
		Protocol:    protocol,
		Endpoints:   strings.Split(o.endpoints, ","),
		TLSDir:      o.tlsDir,
		CAFile:      o.ca,
		CertFile:    o.cert,
		KeyFile:     o.key,
		Timeout:     o.timeout,
		MaxAttempts: o.attempts,
	})
	if err != nil {
		fmt.Fprintf(stderr, "kvctl %s: %v\n", cmd, err)
		return exitUsage
	}
	defer func() { _ = c.Close() }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := do(ctx, c, cmd, rest, cons, o.limit, stdin, stdout); err != nil {
		fmt.Fprintf(stderr, "kvctl %s: %v\n", cmd, err)
		if errors.Is(err, client.ErrNotFound) {
			return exitNotFound
		}
		return exitFailed
	}
	return 0
}

func do(ctx context.Context, c *client.Client, cmd string, args []string, cons keyapi.Consistency, limit int, stdin io.Reader, stdout io.Writer) error {
	switch cmd {
	case "get":
		v, err := c.Get(ctx, args[0], client.WithConsistency(cons))
		if err != nil {
			return err
		}
		_, err = stdout.Write(v)
		return err
	case "put":
		v := []byte(args[1])
		if args[1] == "-" {
			// The store refuses more than its limit anyway; reading
			// beyond the client's own bound would only fill memory.
			b, err := io.ReadAll(io.LimitReader(stdin, client.DefaultMaxValueBytes+1))
			if err != nil {
				return fmt.Errorf("reading the value from standard input: %w", err)
			}
			if len(b) > client.DefaultMaxValueBytes {
				return fmt.Errorf("the value on standard input is larger than %d bytes", client.DefaultMaxValueBytes)
			}
			v = b
		}
		return c.Put(ctx, args[0], v)
	case "delete":
		return c.Delete(ctx, args[0])
	case "list":
		prefix := ""
		if len(args) == 1 {
			prefix = args[0]
		}
		printed, after := 0, ""
		for {
			page, err := c.List(ctx, prefix, after, keyapi.MaxListLimit, client.WithConsistency(cons))
			if err != nil {
				return err
			}
			for _, k := range page.Keys {
				if limit > 0 && printed == limit {
					return nil
				}
				// A key may hold any byte; a newline in one would break
				// the one-key-per-line output, so such keys are quoted.
				if strings.ContainsAny(k, "\n\r") {
					k = fmt.Sprintf("%q", k)
				}
				if _, err := fmt.Fprintln(stdout, k); err != nil {
					return err
				}
				printed++
			}
			if page.Next == "" {
				return nil
			}
			after = page.Next
		}
	}
	return fmt.Errorf("unknown command %q", cmd)
}

// parseInterspersed parses flags before and after the arguments
// (`kvctl put KEY VALUE --grpc`), as people type them; after "--"
// everything is an argument, so a value may start with "-".
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		left := fs.Args()
		if i := len(args) - len(left); i > 0 && args[i-1] == "--" {
			return append(pos, left...), nil
		}
		if len(left) == 0 {
			return pos, nil
		}
		pos, args = append(pos, left[0]), left[1:]
	}
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, usage)
	var o options
	fs := flags("", &o)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, `
Examples, in a pod that mounts the client Secret demo-client-app at /etc/kvstore/client:
  KV_ENDPOINT=https://demo.default.svc:8080 KV_TLS_DIR=/etc/kvstore/client kvctl put greeting hello
  kvctl get --consistency stale greeting
  kvctl list app/
  kvctl get --grpc --endpoint https://demo.default.svc:50051 greeting
`)
}

// idle blocks until SIGTERM or SIGINT.
func idle() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	<-ch
}

// Package access owns who may use a store's client API: the identity a
// client certificate carries, the rules file that says which clients a
// store has and what each may do, and the decision for one request. The
// operator writes the rules (and issues the certificates); kvnode reads
// them. It uses the standard library only, so that both sides, and the
// tests, share one definition.
//
// Why a rules file and not rights written into the certificates: a
// certificate cannot be taken back before it expires, a rule can. A
// client removed from spec.clients is refused as soon as the file the
// node reads no longer names it, and a client removed and added again
// under the same name does not get its old certificate back
// (IssuedAfter).
package access

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Modes of spec.clientAuth and of kvnode's --client-auth.
const (
	// ModeMTLS: every request to the client API needs a client
	// certificate of a client the rules name.
	ModeMTLS = "mtls"
	// ModeNone: anyone who reaches the port may read and write.
	ModeNone = "none"
)

// Access levels of a client.
const (
	ReadWrite = "readWrite"
	ReadOnly  = "readOnly"
)

// RulesFile is the rules' key in the operator's ConfigMap, and so the
// file's name where the pods mount it.
const RulesFile = "clients.json"

// maxRulesBytes bounds the file a node reads: the rules of 64 clients
// fit many times over.
const maxRulesBytes = 1 << 20

// commonNamePrefix starts the common name of every client certificate.
// The other certificates of a store's CA are named otherwise (the
// admin's "kvstore-admin", the pods' after the store, with " peer" for
// the peer certificate), so no client can be named into another role,
// and no other certificate passes as a client.
const commonNamePrefix = "client:"

// CommonName is the common name of client name's certificate.
func CommonName(name string) string { return commonNamePrefix + name }

// ClientName is the client a certificate's common name names, if any.
func ClientName(commonName string) (string, bool) {
	name, ok := strings.CutPrefix(commonName, commonNamePrefix)
	return name, ok && name != ""
}

// Client is one client of a store, as spec.clients lists it.
type Client struct {
	Name string `json:"name"`
	// Access is ReadWrite or ReadOnly.
	Access string `json:"access"`
	// Prefix, when set, is the only part of the key space the client
	// reaches: every key it reads, writes or lists starts with it.
	Prefix string `json:"prefix,omitempty"`
	// IssuedAfter refuses the client's certificates issued (NotBefore)
	// before it: those of an earlier client of the same name.
	IssuedAfter time.Time `json:"issuedAfter,omitzero"`
	// RequestsPerSecond and Burst, when set, are the client's own rate
	// limit (package throttle), instead of the node's --client-rate and
	// --client-burst: a rate of 0 is unlimited, a burst of 0 one second
	// of the rate. Unset, the node's apply.
	RequestsPerSecond *float64 `json:"requestsPerSecond,omitempty"`
	Burst             *int     `json:"burst,omitempty"`
}

// Rules is the rules file.
type Rules struct {
	Clients []Client `json:"clients"`
}

// ParseRules reads a rules file, refusing what would make a decision
// ambiguous: a client without a name, named twice, or with an unknown
// access level.
func ParseRules(b []byte) (map[string]Client, error) {
	if len(b) > maxRulesBytes {
		return nil, fmt.Errorf("access rules: %d bytes, at most %d", len(b), maxRulesBytes)
	}
	var r Rules
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("access rules: %w", err)
	}
	m := make(map[string]Client, len(r.Clients))
	for _, c := range r.Clients {
		switch {
		case c.Name == "":
			return nil, errors.New("access rules: a client without a name")
		case c.Access != ReadWrite && c.Access != ReadOnly:
			return nil, fmt.Errorf("access rules: client %q: access %q is neither %s nor %s", c.Name, c.Access, ReadWrite, ReadOnly)
		case c.RequestsPerSecond != nil && *c.RequestsPerSecond < 0:
			return nil, fmt.Errorf("access rules: client %q: requestsPerSecond %v is negative", c.Name, *c.RequestsPerSecond)
		case c.Burst != nil && *c.Burst < 0:
			return nil, fmt.Errorf("access rules: client %q: burst %d is negative", c.Name, *c.Burst)
		}
		if _, dup := m[c.Name]; dup {
			return nil, fmt.Errorf("access rules: client %q is named twice", c.Name)
		}
		m[c.Name] = c
	}
	return m, nil
}

// Op is what a request does to a key.
type Op int

// The operations.
const (
	Read Op = iota
	Write
)

// Refusals. An Error wraps one of them; the APIs map ErrUnauthenticated
// to 401 (gRPC Unauthenticated) and ErrForbidden to 403 (PermissionDenied).
var (
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("forbidden")
)

// Error is a refusal with its one-line reason.
type Error struct {
	Kind   error
	Reason string
}

func (e *Error) Error() string { return e.Reason }
func (e *Error) Unwrap() error { return e.Kind }

func unauthenticated(format string, args ...any) error {
	return &Error{Kind: ErrUnauthenticated, Reason: fmt.Sprintf(format, args...)}
}

func forbidden(format string, args ...any) error {
	return &Error{Kind: ErrForbidden, Reason: fmt.Sprintf(format, args...)}
}

// Identify returns the client that the verified chain of a TLS
// connection belongs to, under rules. roots is the store's CA bundle:
// the handshake may also have accepted certificates of other CAs (the
// peers'), so the chain is verified here again, for client use.
func Identify(cs *tls.ConnectionState, roots *x509.CertPool, rules map[string]Client) (Client, error) {
	if cs == nil {
		return Client{}, unauthenticated("client authentication needs HTTPS with a client certificate")
	}
	if len(cs.PeerCertificates) == 0 {
		return Client{}, unauthenticated("no client certificate: this store admits only its clients (spec.clients), each with the certificate in its Secret")
	}
	if roots == nil {
		return Client{}, unauthenticated("this node has no CA to verify client certificates against")
	}
	leaf := cs.PeerCertificates[0]
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(opts); err != nil {
		return Client{}, unauthenticated("client certificate not accepted: %v", err)
	}
	name, ok := ClientName(leaf.Subject.CommonName)
	if !ok {
		return Client{}, unauthenticated("certificate %q is not a client certificate (its common name does not start with %q)", leaf.Subject.CommonName, commonNamePrefix)
	}
	c, ok := rules[name]
	if !ok {
		return Client{}, unauthenticated("%q is not a client of this store", name)
	}
	if leaf.NotBefore.Before(c.IssuedAfter) {
		return Client{}, unauthenticated("client %q: this certificate was issued before the client was (re)created; use the one in its current Secret", name)
	}
	return c, nil
}

// Allows says whether c may do op on key.
func (c Client) Allows(op Op, key string) error {
	if op == Write && c.Access != ReadWrite {
		return forbidden("client %q is read-only", c.Name)
	}
	if !strings.HasPrefix(key, c.Prefix) {
		return forbidden("client %q may only use keys that start with %q", c.Name, c.Prefix)
	}
	return nil
}

// ListPrefix is the prefix a list request of c uses: its own prefix when
// the request names none, the request's when that lies within c's.
func (c Client) ListPrefix(prefix string) (string, error) {
	if prefix == "" {
		return c.Prefix, nil
	}
	if !strings.HasPrefix(prefix, c.Prefix) {
		return "", forbidden("client %q may only list keys that start with %q", c.Name, c.Prefix)
	}
	return prefix, nil
}

package access_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
)

func leaf(t *testing.T, ca *certs.CA, l certs.Leaf, now time.Time) *x509.Certificate {
	t.Helper()
	certPEM, _, err := ca.Issue(l, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Who a connection's certificate is, under the rules: only a client
// certificate of the store's CA, of a client the rules name, issued since
// that client was created.
func TestIdentify(t *testing.T) {
	now := time.Now()
	ca, _ := certs.NewCA("store", time.Hour, now)
	peerCA, _ := certs.NewCA("peers", time.Hour, now)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	rules, err := access.ParseRules([]byte(`{"clients":[{"name":"app","access":"readWrite","prefix":"app/"},{"name":"new","access":"readOnly","issuedAfter":"` + now.Add(time.Hour).Format(time.RFC3339) + `"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	conn := func(c *x509.Certificate) *tls.ConnectionState {
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
	}
	for _, c := range []struct {
		name string
		cs   *tls.ConnectionState
		want error
		says string
	}{
		{"plain HTTP", nil, access.ErrUnauthenticated, "needs HTTPS"},
		{"no certificate", &tls.ConnectionState{}, access.ErrUnauthenticated, "no client certificate"},
		{"a client", conn(leaf(t, ca, certs.Leaf{CommonName: access.CommonName("app"), Client: true, Lifetime: time.Hour}, now)), nil, ""},
		// The handshake also accepts the peer CA's certificates: the
		// client API verifies against the store's CA again.
		{"a client name from the peer CA", conn(leaf(t, peerCA, certs.Leaf{CommonName: access.CommonName("app"), Client: true, Lifetime: time.Hour}, now)), access.ErrUnauthenticated, "not accepted"},
		{"a server-only certificate", conn(leaf(t, ca, certs.Leaf{CommonName: access.CommonName("app"), Server: true, Lifetime: time.Hour}, now)), access.ErrUnauthenticated, "not accepted"},
		{"the admin", conn(leaf(t, ca, certs.Leaf{CommonName: "kvstore-admin", Client: true, Lifetime: time.Hour}, now)), access.ErrUnauthenticated, "not a client certificate"},
		{"an empty client name", conn(leaf(t, ca, certs.Leaf{CommonName: "client:", Client: true, Lifetime: time.Hour}, now)), access.ErrUnauthenticated, "not a client certificate"},
		{"an unknown client", conn(leaf(t, ca, certs.Leaf{CommonName: access.CommonName("gone"), Client: true, Lifetime: time.Hour}, now)), access.ErrUnauthenticated, "not a client of this store"},
		{"a certificate older than its client", conn(leaf(t, ca, certs.Leaf{CommonName: access.CommonName("new"), Client: true, Lifetime: time.Hour}, now)), access.ErrUnauthenticated, "issued before"},
	} {
		_, err := access.Identify(c.cs, roots, rules)
		if !errors.Is(err, c.want) || c.want != nil && !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want %v saying %q", c.name, err, c.want, c.says)
		}
	}
}

func TestRights(t *testing.T) {
	rw := access.Client{Name: "app", Access: access.ReadWrite, Prefix: "app/"}
	ro := access.Client{Name: "ro", Access: access.ReadOnly}
	for _, c := range []struct {
		client access.Client
		op     access.Op
		key    string
		want   error
	}{
		{rw, access.Write, "app/x", nil},
		{rw, access.Read, "app/", nil},
		{rw, access.Read, "app", access.ErrForbidden},
		{rw, access.Write, "other/app/x", access.ErrForbidden},
		{ro, access.Read, "anything", nil},
		{ro, access.Write, "anything", access.ErrForbidden},
	} {
		if err := c.client.Allows(c.op, c.key); !errors.Is(err, c.want) {
			t.Errorf("%s op %d on %q: %v, want %v", c.client.Name, c.op, c.key, err, c.want)
		}
	}
	if p, err := rw.ListPrefix(""); p != "app/" || err != nil {
		t.Errorf("list without a prefix: %q %v", p, err)
	}
	if p, err := rw.ListPrefix("app/x"); p != "app/x" || err != nil {
		t.Errorf("list within the prefix: %q %v", p, err)
	}
	if _, err := rw.ListPrefix("ap"); !errors.Is(err, access.ErrForbidden) {
		t.Errorf("list around the prefix: %v", err)
	}
}

func TestParseRulesRefusesAmbiguity(t *testing.T) {
	for in, says := range map[string]string{
		`{"clients":[{"name":"a","access":"readWrite"},{"name":"a","access":"readOnly"}]}`: "named twice",
		`{"clients":[{"access":"readWrite"}]}`:                                             "without a name",
		`{"clients":[{"name":"a","access":"admin"}]}`:                                      "neither",
		`{"clients":[{"name":"a","access":"readWrite","rights":"all"}]}`:                   "unknown field",
		`{"clients":[{"name":"a","access":"readWrite","requestsPerSecond":-1}]}`:           "requestsPerSecond -1 is negative",
		`{"clients":[{"name":"a","access":"readWrite","burst":-5}]}`:                       "burst -5 is negative",
		`{"clients":[{"name":"a","access":"readWrite","burst":1.5}]}`:                      "cannot unmarshal",
		`{"clients":`: "unexpected EOF",
		`{"clients":[]}` + strings.Repeat(" ", 1<<20): "at most",
	} {
		if _, err := access.ParseRules([]byte(in)); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("%.60s: %v, want %q", in, err, says)
		}
	}
}

// A client's own rate limit is optional: absent, the node's applies; 0 is
// a value of its own (unlimited), not absent. Rules without limits are
// written as before, so that the operator's ConfigMap does not change for
// stores that set none.
func TestParseRulesLimits(t *testing.T) {
	rules, err := access.ParseRules([]byte(`{"clients":[{"name":"a","access":"readWrite"},{"name":"b","access":"readOnly","requestsPerSecond":0.5,"burst":3},{"name":"c","access":"readOnly","requestsPerSecond":0}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if a := rules["a"]; a.RequestsPerSecond != nil || a.Burst != nil {
		t.Errorf("a: %v %v, want neither", a.RequestsPerSecond, a.Burst)
	}
	if b := rules["b"]; b.RequestsPerSecond == nil || *b.RequestsPerSecond != 0.5 || b.Burst == nil || *b.Burst != 3 {
		t.Errorf("b: %+v", b)
	}
	if c := rules["c"]; c.RequestsPerSecond == nil || *c.RequestsPerSecond != 0 || c.Burst != nil {
		t.Errorf("c: %+v", c)
	}
	b, err := json.Marshal(access.Rules{Clients: []access.Client{{Name: "a", Access: access.ReadWrite}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"clients":[{"name":"a","access":"readWrite"}]}`; string(b) != want {
		t.Errorf("rules without limits = %s, want %s", b, want)
	}
}
